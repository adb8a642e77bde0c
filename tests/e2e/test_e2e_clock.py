"""Time on the real firmware (Unix port, real umqtt, tbsim): the ESP32's ticks wrapping mid-run,
TLS before the clock with an RTC that starts at 2000, and an RTC put right by re-syncs.

Ticks: every meter of this suite runs on the ESP32's 2**30 ticks (conftest.py); here they wrap
while the meter reports. The RTC model (firmware/hal/unixrtc.py, METER_RTC) is the simulator's
own code: 3.5 KB of this port's heap that a board does not spend (the run state's free heap
with and without it, TLS: 104320 and 107776 bytes). Those tests give the heap 7 KB on top: the
model, and the 1 to 2 KB more that TLS provisioning after a minute-long time state needed here
(alone it passed from 116K, under the suite's parallel load it failed at 115K: fragmentation;
on the board mbedTLS allocates outside the MicroPython heap, docs/unix-port.md §8)."""

import pathlib
import re
import time

import pytest

from e2e_support import KEY, SECRET, base_config, device_name
from lab.certs import make_test_pki
from lab.meterhost import PulseTrain
from tbsim import Profile, TBSim

NAME = device_name()
RTC_HEAP = "124K"  # conftest.HEAP + the RTC model + the margin above


def _points(sim, key="pulses"):
    return [(e["ts"], e["values"]) for e in sim.telemetry(NAME) if key in e["values"]]


def _uptimes(m):
    # The log's uptime column (firmware/log.py: the clock's uptime, which never wraps).
    return [float(l.split(" ", 1)[0]) for l in m.text().splitlines()
            if re.match(r"^\d+\.\d{3} [IWE] ", l)]


def test_reports_across_a_ticks_ms_and_a_ticks_us_wrap(sim, meters):
    # Both ticks wrap 12 s after power-up: while it reports, pulses arriving at a steady 3.6 kW.
    m = meters(base_config(sim, publish_interval_s=2, health_interval_s=2),
               env={"METER_TICKS_WRAP_MS": "12000"})
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 10), m.text()
    train = PulseTrain(m, 1000, lambda t: 3600.0, max_pulses=24)  # one a second
    start = time.time()
    train.start()
    train.join(40)
    end = time.time()
    assert train.played == 24 and end - start > 20  # runs past the wrap at 12 s
    assert sim.wait_for(lambda: sim.device(NAME)["latestTelemetry"].get("pulses") == 24, 15), \
        sim.device(NAME)["latestTelemetry"]
    # Power while the pulses came (the index lags by up to persist_interval_s: by time, then).
    powers = [v["power_w"] for t, v in _points(sim) if (start + 4) * 1000 <= t <= end * 1000]
    assert len(powers) >= 7 and all(3000 <= p <= 4300 for p in powers), powers  # none wrapped
    stamps = [t for t, _v in _points(sim)]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    ups = [v["uptime_s"] for _t, v in _points(sim, "uptime_s")]
    assert ups and ups == sorted(ups) and ups[-1] >= 20 and ups[0] >= 0
    status = sim.rpc(NAME, "status")  # a log line after the wrap, and the status RPC's uptime
    assert status and status["uptime_s"] >= 20, status
    logged = _uptimes(m)
    assert logged == sorted(logged) and logged[-1] >= 20, logged  # the log's never went back
    assert sim.wait_for(lambda: (m.record("pulses") or {}).get("index") == 24, 20)


@pytest.fixture
def tls_sim(tmp_path):
    pki = make_test_pki(str(tmp_path / "pki"), hostnames=("localhost",))
    s = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=0, certfile=pki["cert"],
              keyfile=pki["key"], provision_close_s=5.0)
    s.start()
    yield s, pathlib.Path(pki["ca_der"]).read_bytes()
    s.stop()


def _tls_meter(sim, ca, meters, rtc):
    cfg = base_config(sim, tb_host="localhost", tb_port=sim.mqtts_port, tb_tls=True,
                      tb_plain_ok=None)
    m = meters(cfg, files={"ca.der": ca}, env={"METER_RTC": rtc}, heap=RTC_HEAP)
    m.set_net("nontp")  # Wi-Fi, DNS and TCP work; NTP's port is blocked
    return m


def test_tls_with_the_rtc_at_2000_waits_for_ntp_then_connects(tls_sim, meters):
    sim, ca = tls_sim
    m = _tls_meter(sim, ca, meters, "2000")
    m.power_on()
    assert m.wait_for(r"no time from pool.ntp.org \(clock not set: TLS cannot check "
                      r"certificates; no connection until NTP answers\)", 20), m.text()
    time.sleep(8)
    assert sim.events("connect") == [] and sim.events("provision") == []
    assert m.state == "time"
    m.set_net("up")  # the firewall lets NTP through
    assert m.wait_for(r"time: synced with pool.ntp.org: 20\d\d-", 15), m.text()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    connects = [e for e in sim.events("connect") if e["returnCode"] == 0]
    assert connects and all(e["tls"] for e in connects)
    # The readings taken while the clock was unknown carry the time they were taken.
    assert sim.wait_for(lambda: len(_points(sim)) >= 5, 20)
    stamps = [t for t, _v in _points(sim)]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    first = min(t for t, _l in m.lines) * 1000
    assert abs(stamps[0] - first) < 5000, (stamps[0], first)  # the boot reading, not replay time


def test_a_certificate_not_yet_valid_by_the_rtc_says_clock_not_set(tls_sim, meters):
    # A meter that has its credentials restarts with an RTC that has a date, but one before the
    # certificate's (2025-06-01): the time state lets it try, the handshake fails as mbedTLS
    # fails it on the board, and the log names the clock; NTP back, it connects.
    sim, ca = tls_sim
    m = _tls_meter(sim, ca, meters, "host")
    m.set_net("up")
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    m.power_cut()
    since = time.time()
    wrong = 1_748_736_000_000
    m.extra_env["METER_RTC"] = "2000,step:300:%d" % (wrong - 946_684_800_000 - 300)
    m.set_net("nontp")
    m.power_on()
    assert m.wait_for(r"TLS: The certificate validity starts in the future \(clock not set",
                      30, since), m.text(since)
    assert m.wait_for(r"state: \S+ -> time", 5, since)
    m.set_net("up")
    assert m.wait_for(r"time: synced with pool.ntp.org", 20, since), m.text(since)
    assert m.wait_for(r"state: \S+ -> run", 30, since), m.text(since)


def test_an_rtc_jumping_ahead_is_put_back_by_the_resync_and_timestamps_stay_in_order(sim, meters):
    # The RTC jumps 20 s ahead 15 s after power-up (and runs 0.5 % fast); the re-sync a minute
    # after the first sync puts it back; no timestamp at the server ever goes backwards.
    m = meters(base_config(sim, publish_interval_s=2, ntp_interval_s=60),
               env={"METER_RTC": "drift:5000,step:15000:20000"}, heap=RTC_HEAP)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 10), m.text()
    line = m.wait_for(r"time: re-synced with pool.ntp.org: clock corrected by -\d+ ms", 90)
    assert line, m.text()
    fix = int(re.search(r"by (-\d+) ms", line).group(1))
    assert -20600 <= fix <= -20000, line
    time.sleep(25)  # held at the last timestamp + 1 ms for the 20 s the clock needs to catch up
    stamps = [t for t, _v in _points(sim)]
    assert len(stamps) >= 30 and all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[-1] - time.time() * 1000) < 5000  # on time again
