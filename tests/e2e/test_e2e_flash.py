"""A failing or full flash (fault injection in the Unix HAL's block device: firmware/hal/unix.py,
METER_FLASH_*). Whatever the flash does, the meter never resets for it: one boot, readings
with the index the meter counted, no traceback, no MemoryError (conftest), and it gets its
state back onto flash by itself once writes work again (README: when the flash fails)."""

import binascii
import os
import struct
import time

import pytest

from e2e_support import base_config, device_name
from lab.meterhost import PulseTrain

NAME = device_name()
INTERVAL_S = 2


def points(sim):
    return sorted((p["ts"], p["values"]["pulses"]) for p in sim.telemetry(NAME)
                  if "pulses" in p["values"])


def flash_errors(sim):
    h = [p["values"]["flash_errors"] for p in sim.telemetry(NAME) if "flash_errors" in p["values"]]
    return h[-1] if h else None


def latest_pulses(sim):
    return ((sim.device(NAME) or {}).get("latestTelemetry") or {}).get("pulses")


def assert_no_gap(sim, since_ms, label):
    # One reading every INTERVAL_S on the meter's clock: a gap is a lost reading.
    ts = sorted(set(t for t, _ in points(sim) if t >= since_ms))
    assert len(ts) >= 10, (label, ts)
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert max(gaps) <= INTERVAL_S * 1000 + 600, (label, max(gaps))
    by_ts = [p for _t, p in points(sim)]
    assert by_ts == sorted(by_ts), (label, "index went backwards")


def settle(sim, m, train, timeout=60):
    train.stop()
    assert sim.wait_for(lambda: latest_pulses(sim) == m.pulses_delivered, timeout), \
        (m.pulses_delivered, latest_pulses(sim), m.text()[-3000:])


@pytest.mark.parametrize("fault", ["eio", "full"])
def test_a_flash_failing_from_the_first_boot_never_boot_loops(sim, meters, fault):
    # EIO: every block program refused, from power-up (a dead chip). Full: the filesystem has
    # no free block from power-up (not even for the state/ directory of a meter's first boot).
    # Today's main resets on the first refused write, at every boot: 8 boots in 70 s and no
    # telemetry.
    env = ({"METER_FLASH_EIO_AFTER": "0"} if fault == "eio" else {"METER_FLASH_FULL_FROM_MS": "0"})
    m = meters(base_config(sim, publish_interval_s=INTERVAL_S, health_interval_s=10), env=env)
    t0 = time.time()
    m.power_on()
    train = PulseTrain(m, 1000, lambda t: 7200.0)  # 2 pulses/s
    train.start()
    assert m.wait_for(r"state: \S+ -> run", 40), m.text()
    time.sleep(10)
    m.set_net("down")  # 25 readings offline: a spill's worth the flash cannot take
    time.sleep(50)
    m.set_net("up")
    time.sleep(max(0.0, t0 + 70 - time.time()))
    assert m.boots == 1 and not m.exits, m.text()[-3000:]  # 70 s, one boot
    settle(sim, m, train)
    assert_no_gap(sim, (t0 + 15) * 1000, fault)  # the offline readings too, from RAM
    assert len(sim.events("provision")) == 1  # credentials from RAM on every reconnect
    assert m.wait_for(r"credentials held in RAM only", 1), m.text()
    assert m.record("creds") is None  # the flash took nothing
    assert sim.wait_for(lambda: (flash_errors(sim) or 0) > 0, 15)
    if fault == "eio":
        assert m.wait_for(r"backlog: flash write failed \(\[Errno 5\] EIO\)", 1), m.text()
    else:  # nothing fits: the offline readings wait in RAM, no chunk is even tried
        assert m.wait_for(r"backlog: up to 0 readings on flash \(buffer_points 2880; 0 KB free",
                          1), m.text()
        assert m.wait_for(r"not saved \(\[Errno 28\] ENOSPC\)", 1), m.text()


def test_a_flash_failing_mid_run_degrades_and_recovers_by_itself(sim, meters):
    # EIO from 20 s to 90 s of uptime (a brownout spell, a flaky connection to the chip), with
    # the Wi-Fi gone for 50 s in the middle of it: spills refused, readings kept in RAM.
    m = meters(base_config(sim, publish_interval_s=INTERVAL_S, health_interval_s=10),
               env={"METER_FLASH_EIO_FROM_MS": "20000", "METER_FLASH_EIO_UNTIL_MS": "90000"})
    t0 = time.time()
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 20), m.text()
    train = PulseTrain(m, 1000, lambda t: 7200.0)
    train.start()
    assert m.wait_for(r"store: state/\S+ not saved \(\[Errno 5\] EIO\)", 40), m.text()
    m.set_net("down")
    time.sleep(50)
    assert m.wait_for(r"backlog: flash write failed", 1), m.text()
    m.set_net("up")
    # Writes work again at 90 s: the store's next attempt (the index, every persist_interval_s,
    # or its flush, every minute) takes them.
    assert m.wait_for(r"store: flash writes work again", 90 - (time.time() - t0) + 75), m.text()
    settle(sim, m, train)
    assert m.boots == 1 and not m.exits, m.text()[-3000:]
    assert_no_gap(sim, (t0 + 10) * 1000, "mid-run")
    assert sim.wait_for(lambda: (flash_errors(sim) or 0) > 0, 15)
    # The index the server saw is on flash again: a power cut now loses nothing of it.
    assert sim.wait_for(lambda: (m.record("pulses") or {}).get("index") == m.pulses_delivered, 30)


def _chunk(readings):
    # A chunk file as firmware/backlog.py writes it: "<qqi" records, then their crc32.
    body = b"".join(struct.pack("<qqi", *r) for r in readings)
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


def test_a_flash_that_fills_up_during_a_long_outage_drops_the_oldest_readings(sim, meters,
                                                                                tmp_path):
    # A small flash (128 blocks, 512 KB) holding four chunks of readings from an earlier
    # outage; buffer_points at its maximum, far more than fits. Offline again, and 15 s after
    # power-up other files take every free block: the next spill meets ENOSPC. Today's main
    # resets on it, and again at every boot.
    workdir = tmp_path / "meter-a1b2c3d4e5f6"  # the meters fixture's directory for this uid
    workdir.mkdir()
    with open(workdir / "flash.img", "wb") as f:
        f.write(b"\xff" * 128 * 4096)  # an image keeps the size it was made with
    cfg = base_config(sim, publish_interval_s=INTERVAL_S, health_interval_s=10,
                      buffer_points=100000)
    m = meters(cfg)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 20), m.text()
    m.power_cut()
    old_ms = int((time.time() - 3600) * 1000)
    for k in range(4):
        m.put_file("state/buf/%08x.bin" % (k + 1), _chunk(
            [(old_ms + (k * 120 + i) * 2000, 0, 0) for i in range(120)]))
    m.extra_env["METER_FLASH_FULL_FROM_MS"] = "15000"
    t_boot = time.time()
    m.power_on()
    assert m.wait_for(r"480 readings from before the reset wait on flash", 20, t_boot), m.text()
    train = PulseTrain(m, 1000, lambda t: 3600.0)
    train.start()
    # Online first: the clock syncs (readings without a time are not taken offline).
    assert m.wait_for(r"state: \S+ -> run", 20, t_boot), m.text(t_boot)
    m.set_net("down")
    assert m.wait_for(r"hal: flash full", 30, t_boot), m.text(t_boot)
    assert m.wait_for(r"backlog: flash full: \d+ oldest readings dropped", 60, t_boot), \
        m.text(t_boot)
    time.sleep(max(0.0, t_boot + 70 - time.time()))
    m.set_net("up")
    settle(sim, m, train, timeout=90)
    assert m.boots == 2 and m.exits[-1][1] == -9, m.text()[-3000:]  # the one power cut
    # Every reading of this outage reached the server, in order; only old ones were dropped.
    assert_no_gap(sim, (t_boot + 5) * 1000, "full")
    old = [t for t, _ in points(sim) if t < t_boot * 1000 - 600_000]
    assert len(old) < 480
    assert sim.wait_for(lambda: (flash_errors(sim) or 0) > 0, 15)
    # Each boot said what bound applies: far less than buffer_points on this flash.
    assert m.count(r"W backlog: up to \d+ readings on flash \(buffer_points 100000; \d+ KB "
                   r"free, 320 KB kept for other files\)") == 2, m.text()
