"""Firmware updates over the air (issue 18), end to end: the real firmware on the Unix port with
the ESP32-sized heap, updated by tbsim as ThingsBoard does it (an OTA package uploaded and
assigned to the device profile, fw_* shared attributes, chunks over MQTT).

Versions: v1 is what the meter boots from its deployed tree, v2 a package built from the same
tree stamped 2.0.0 (firmware/version.mpy); the test tells them apart by the boot line and by
current_fw_version on the server. The first test's v2 also changes firmware/entry.py (the code
main.py runs once the boot loader chose the tree: the meter's build and its last-chance
handler), so its boot line shows that an update replaces that code too. Deadlines are generous
(a loaded 2-core machine)."""

import os
import time

import pytest
from e2e_support import KEY, base_config, cups_for, device_name
from ota_support import current_version, fw_states, make_tree, package, roll_out

from conftest import HEAP, TICKS_ENV
from lab.meterhost import RESET_EXIT_CODE, PulseTrain, VirtualMeter

NAME = device_name()
# The heap: conftest.HEAP, the suite's, as for every meter. Measured (test_update_from_v1_to_v2
# with OTA_HEAP changed, 2026-12-01): at 117K the download has 12.3 KB free (health messages;
# 9.2 KB before firmware/ota_check.py took the rare steps out of firmware/ota.py); the update,
# its slot boot and its trial boot pass at 114K (lowest 7.9 KB); at 113K the run state has
# 8.4 KB free and the download's start finds no room ("no room in the heap for the download;
# it resumes in the next session": the meter keeps metering, its heap back). Once, at 117K
# with 4 tests on 2 cores, the first chunk's append ran out of heap and reset the meter: a
# MemoryError there now pauses the download (tests/unit/test_ota.py).
OTA_HEAP = HEAP


@pytest.fixture
def meters(tmp_path):
    """Virtual meters booting from a given tree (conftest's fixture always boots build/device);
    the same checks at the end: no MemoryError anywhere, the tracebacks a test expects."""
    made = []

    def make(cfg, tree, tracebacks=0, **kw):
        kw["env"] = dict(TICKS_ENV, **(kw.get("env") or {}))
        kw.setdefault("heap", OTA_HEAP)
        m = VirtualMeter(str(tmp_path / ("meter-" + kw["uid"] if "uid" in kw else "meter")), cfg,
                         tree, **kw)
        m.tracebacks = tracebacks
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
    for m in made:
        assert "MemoryError" not in m.text(), m.text()[-3000:]
        assert m.text().count("Traceback") == m.tracebacks, m.text()[-3000:]


def _cfg(sim):
    return base_config(sim, health_interval_s=5)


def _heap_floor(sim, since_ms=0):
    vals = [e["values"]["heap_free"] for e in sim.telemetry(NAME)
            if "heap_free" in e["values"] and e["ts"] >= since_ms]
    return min(vals) if vals else None


def _booted(m, ver, timeout=60, since=0):
    return m.wait_for(r"meter firmware starting on unix: meter-firmware %s" % ver.replace(".", r"\."),
                      timeout, since)


def _v1(tmp_path, device_dir):
    return make_tree(str(tmp_path / "v1"), device_dir, "1.0.0")


# v2's firmware/entry.py says so in its boot line (v1's has the line without it).
_BOOT_LINE = '"meter firmware starting on %s: %s %s"'
_V2_ENTRY = " (started by v2's firmware/entry.py)"


def _v2_with_its_own_entry(tmp_path, device_dir):
    return make_tree(str(tmp_path / "v2"), device_dir, "2.0.0", patch={
        "firmware/entry": (_BOOT_LINE, _BOOT_LINE[:-1] + _V2_ENTRY + '"')})


def _exited(m, timeout):
    """The boot ended by itself (a reset: the Unix port exits), with auto_restart off."""
    deadline = time.time() + timeout
    while m.powered and time.time() < deadline:
        time.sleep(0.1)
    return not m.powered and m.exits[-1][1] == RESET_EXIT_CODE


def test_update_from_v1_to_v2_then_its_slot_corrupted_falls_back_to_v1(tmp_path, device_dir, sim,
                                                                        meters):
    v1 = _v1(tmp_path, device_dir)
    v2 = package(_v2_with_its_own_entry(tmp_path, device_dir), "2.0.0")
    m = meters(_cfg(sim), v1)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    assert _V2_ENTRY not in _booted(m, "1.0.0", 1)
    assert sim.wait_for(lambda: current_version(sim, NAME) == "1.0.0", 20)
    train = PulseTrain(m, 1000, lambda t: 18_000.0)  # 5 pulses/s through the whole update
    train.start()
    t0 = time.time()
    roll_out(sim, KEY, v2, "2.0.0")
    assert m.wait_for(r"ota: downloading firmware 2\.0\.0 \(%d bytes, SHA256\)" % len(v2), 30), m.text()
    line = _booted(m, "2.0.0", 180, t0)
    assert line, m.text()[-3000:]
    assert line.endswith(_V2_ENTRY)  # what main.py runs came with the update
    assert m.wait_for(r"remote: firmware 2\.0\.0 confirmed", 60, t0), m.text()[-3000:]
    assert sim.wait_for(lambda: current_version(sim, NAME) == "2.0.0", 30)
    assert sim.wait_for(lambda: ("UPDATED", None) in fw_states(sim, NAME), 30), fw_states(sim, NAME)
    assert [s for s, _e in fw_states(sim, NAME)] == [
        "DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"]
    # Readings kept flowing during the download: telemetry between DOWNLOADING and UPDATING.
    series = sim.telemetry(NAME)
    start = next(e["ts"] for e in series if e["values"].get("fw_state") == "DOWNLOADING")
    end = next(e["ts"] for e in series if e["values"].get("fw_state") == "UPDATING")
    readings = [e for e in series if "pulses" in e["values"] and start <= e["ts"] <= end]
    print("OTA: %d bytes in %.1f s, %d readings meanwhile, heap floor %s bytes (health)" % (
        len(v2), (end - start) / 1000, len(readings), _heap_floor(sim, start)))
    assert readings, "no reading got through during the download"
    # Every pulse through the download, the hand-over's reset, the unpacking and the trial
    # boot that the meter could see reaches the server; lost only those of the resets' own
    # windows, from the firmware's last save to the next boot's pulse input (a board's PCNT is
    # reset with the chip; firmware/hal/unix.py): a pulse or two at 5 pulses/s.
    train.stop()
    train.join()
    assert sim.wait_for(lambda: sim.device(NAME)["latestTelemetry"].get("pulses")
                        == m.pulses_delivered, 40), \
        (m.pulses_delivered, sim.device(NAME)["latestTelemetry"].get("pulses"))
    assert m.pulses_lost_off <= 10 and m.pulses_delivered > 100, \
        (m.pulses_lost_off, m.pulses_before_input, m.pulses_delivered)
    # The slot record: v2 confirmed, and the next boot stays on it.
    m.power_cut()
    assert m.record("bootslot") == {"run": 1}
    t1 = time.time()
    m.power_on()
    assert (_booted(m, "2.0.0", 30, t1) or "").endswith(_V2_ENTRY), m.text(t1)
    assert m.wait_for(r"state: \S+ -> run", 30, t1)
    assert not m.count(r"ota: downloading", t1)
    # Then the slot's flash goes bad, after the update proved itself, in both places main.py's
    # guard watches. First a module the slot's entry code loads while it builds the meter
    # (firmware/wiring.mpy: firmware/entry.py lets that failure through on a slot); then, for
    # the next starts, the entry module itself (firmware/entry.mpy: main.py's own import).
    # Three failed starts in a row (a traceback each), counted together, then the deployed v1
    # runs, reports FAILED with the reason, and v2 is not installed again.
    garbage = b"M\x06garbage" * 10
    m.power_cut()
    m.put_file("ota/1/firmware/wiring.mpy", garbage)
    m.tracebacks = 3
    m.auto_restart = False  # the reset after the first failed start: by hand, below
    t2 = time.time()
    m.power_on()
    assert _booted(m, "2.0.0", 30, t2), m.text(t2)  # the slot's entry code runs, then fails
    assert _exited(m, 60), m.text(t2)  # bootslot.reboot(): counted, a pause, a reset
    assert m.record("bootslot")["n"] == 1 and m.count(r"^ValueError: incompatible", t2) == 1
    m.put_file("ota/1/firmware/entry.mpy", garbage)
    m.auto_restart = True
    t3 = time.time()
    m.power_on(reset_cause=1)
    why = (r"the firmware in slot 1 failed to start 3 times in a row "
           r"\(ValueError: incompatible \.mpy file\)")
    line = m.wait_for(r"bootslot: %s; booting the deployed firmware" % why, 60, t3)
    assert line, m.text(t2)
    t_back = [t for t, l in m.lines if l == line][0]
    print("slot corrupted: after 2 more failed starts the deployed firmware boots %.1f s after "
          "the power-up" % (t_back - t3))
    # The second and third failed starts in the row: they never reached the firmware's first
    # line (its entry module does not load), and main.py's guard counted each.
    assert m.count(r"^ValueError: incompatible \.mpy file", t3) == 2
    assert not [l for t, l in m.lines if t3 <= t < t_back and "firmware starting" in l]
    line = _booted(m, "1.0.0", 30, t3)
    assert line and _V2_ENTRY not in line, m.text(t2)
    assert sim.wait_for(lambda: _failed(sim), 60), fw_states(sim, NAME)
    assert _failed(sim)[0].startswith("the firmware in slot 1 failed to start 3 times in a row")
    assert sim.wait_for(lambda: current_version(sim, NAME) == "1.0.0", 30)
    n = len([e for e in sim.telemetry(NAME) if "pulses" in e["values"]])
    assert sim.wait_for(lambda: len([e for e in sim.telemetry(NAME) if "pulses" in e["values"]])
                        > n, 60)
    assert m.wait_for(r"failed on this meter before; not tried again", 30, t2), m.text(t2)
    assert m.record("bootslot") == {"run": 0, "stop": sim.ota_packages()[0]["checksum"]}
    assert not m.count(r"ota: downloading", t2)


def _running_v1(tmp_path, device_dir, sim, meters, **kw):
    m = meters(_cfg(sim), _v1(tmp_path, device_dir), **kw)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    assert sim.wait_for(lambda: current_version(sim, NAME) == "1.0.0", 20)
    return m


def _failed(sim):
    return [e for s, e in fw_states(sim, NAME) if s == "FAILED"]


def test_a_corrupted_download_fails_and_the_meter_stays_on_v1(tmp_path, device_dir, sim, meters):
    v2 = package(make_tree(str(tmp_path / "v2"), device_dir, "2.0.0"), "2.0.0")
    m = _running_v1(tmp_path, device_dir, sim, meters)
    info = sim.add_ota_package("meter-firmware", "2.0.0", data=v2)
    # One byte changed where the server keeps it: every chunk arrives, the checksum does not.
    pkg = sim.store.ota_packages[info["id"]]
    pkg.data = pkg.data[:5000] + bytes([pkg.data[5000] ^ 1]) + pkg.data[5001:]
    sim.assign_ota(profile=KEY, firmware=info["id"])
    assert sim.wait_for(lambda: _failed(sim), 120), fw_states(sim, NAME)
    assert _failed(sim) == ["SHA256 of the download does not match fw_checksum"]
    assert [s for s, _e in fw_states(sim, NAME)] == ["DOWNLOADING", "DOWNLOADED", "FAILED"]
    # Never applied, never tried again: not after a reconnect, not after a power cycle.
    t1 = time.time()
    m.power_cut()
    m.power_on()
    assert m.wait_for(r"failed on this meter before; not tried again", 30, t1), m.text(t1)
    assert _booted(m, "1.0.0", 5, t1)
    assert current_version(sim, NAME) == "1.0.0" and not m.count(r"ota: downloading", t1)


def test_an_unknown_checksum_algorithm_and_a_package_too_large_fail(tmp_path, device_dir, sim, meters):
    m = _running_v1(tmp_path, device_dir, sim, meters)
    roll_out(sim, KEY, b"\x00" * 1000, "2.0.0", algorithm="MURMUR3_128")
    assert sim.wait_for(lambda: _failed(sim), 30), fw_states(sim, NAME)
    assert "fw_checksum_algorithm 'MURMUR3_128' cannot be checked here" in _failed(sim)[0]
    big = os.urandom(900 * 1024)  # the flash (2 MiB, with two slots) cannot take it
    roll_out(sim, KEY, big, "3.0.0")
    assert sim.wait_for(lambda: len(_failed(sim)) == 2, 30), fw_states(sim, NAME)
    assert _failed(sim)[1].startswith("package of %d bytes too large" % len(big))
    assert not m.count(r"ota: downloading")
    assert current_version(sim, NAME) == "1.0.0"


def test_a_server_that_closes_mid_download_is_resumed(tmp_path, device_dir, sim, meters):
    v2 = package(make_tree(str(tmp_path / "v2"), device_dir, "2.0.0"), "2.0.0")
    m = _running_v1(tmp_path, device_dir, sim, meters)
    roll_out(sim, KEY, v2, "2.0.0")
    assert m.wait_for(r"ota: downloading firmware 2\.0\.0", 30), m.text()
    time.sleep(8)  # part of it on flash

    sim.stop()  # every connection dropped
    time.sleep(2)
    sim.start()
    assert m.wait_for(r"remote: firmware 2\.0\.0 confirmed", 180), m.text()[-3000:]
    assert sim.wait_for(lambda: current_version(sim, NAME) == "2.0.0", 30)
    # The next session went on from the next chunk, under a new request id (ThingsBoard keeps
    # a package per request id and connection): every chunk asked for once, none skipped.
    text = m.text()
    assert text.index("connection lost") < text.index("ota: firmware 2.0.0 verified")
    assert m.count(r"ota: downloading firmware 2\.0\.0") == 1  # never from the start again
    chunks = [e["chunk"] for e in sim.events("publish") if e.get("ota")]
    assert sorted(set(chunks)) == list(range(-(-len(v2) // 512)))
    assert len(chunks) - len(set(chunks)) <= 1  # the one in flight when the server went


def test_a_firmware_that_crashes_at_import_is_rolled_back(tmp_path, device_dir, sim, meters):
    broken = make_tree(str(tmp_path / "v2"), device_dir, "2.0.0", patch={
        "firmware/__init__": ("def unload(", 'raise RuntimeError("v2 is broken")\n\n\ndef unload(')})
    # Each of its three trial boots fails to start: one traceback each.
    m = _running_v1(tmp_path, device_dir, sim, meters, tracebacks=3)
    t0 = time.time()
    roll_out(sim, KEY, package(broken, "2.0.0"), "2.0.0")
    assert m.wait_for(r"bootslot: 2\.0\.0 did not reach the run state with a PUBACK in 3 boots", 240,
                      t0), m.text(t0)[-3000:]
    assert _booted(m, "1.0.0", 30, t0)
    assert sim.wait_for(lambda: _failed(sim), 60), fw_states(sim, NAME)
    assert "RuntimeError: v2 is broken" in _failed(sim)[0]
    assert m.count(r"^RuntimeError: v2 is broken", t0) == 3  # three boots on trial, no more
    assert current_version(sim, NAME) == "1.0.0"
    assert m.record("bootslot")["stop"] == sim.ota_packages()[0]["checksum"]  # not again


def test_a_firmware_that_never_connects_is_rolled_back(tmp_path, device_dir, sim, meters):
    mute = make_tree(str(tmp_path / "v2"), device_dir, "2.0.0", patch={
        "firmware/link": ('        """Connect. Returns 0, or the server\'s CONNACK refusal code. Raises LinkError."""',
                          '        """Connect. Returns 0, or the server\'s CONNACK refusal code. Raises LinkError."""\n'
                          '        raise LinkError("v2 never connects")')})
    m = _running_v1(tmp_path, device_dir, sim, meters, env={"METER_OTA_TRIAL_S": "15"})
    t0 = time.time()
    roll_out(sim, KEY, package(mute, "2.0.0"), "2.0.0")
    assert m.wait_for(r"bootslot: 2\.0\.0 did not reach the run state with a PUBACK in 3 boots", 240,
                      t0), m.text(t0)[-3000:]
    assert m.count(r"main: no PUBACK in the run state within the trial; resetting", t0) == 3
    assert _booted(m, "1.0.0", 30, t0)
    assert sim.wait_for(lambda: _failed(sim), 60), fw_states(sim, NAME)
    assert _failed(sim)[0].startswith("2.0.0 did not reach the run state with a PUBACK in 3 boots")
    assert current_version(sim, NAME) == "1.0.0"


_SETTLED = r"ota: (firmware \S+ verified|update failed)"
_LAST_GOOD_TRIAL = 2  # trial boots a cut may take: the third must prove itself (bootslot.py)


def _cuts_through_an_update(m, sim, rnd, chunks, out):
    """One meter's seeded power cuts, each followed at once by the power coming back: at random
    instants through the download (and one aimed at its last chunks: the checksum over the
    whole package), then aimed at the hand-over (the record says "new": the unpacking at boot),
    then in the first boots on trial, at most _LAST_GOOD_TRIAL of them (one more would use up
    the trial: a rollback, by design, that a good package must not get here). out: the phase of
    each cut, from the slot record the cut left."""
    def cut(phase=None):
        m.power_cut()
        rec = m.record("bootslot") or {}
        out.append(phase or ("first boot" if isinstance(rec.get("tries"), int) else
                             "switch" if "new" in rec else
                             "confirmed" if rec.get("run") in (1, 2) else "download"))
        return rec

    def asked():  # the highest chunk this meter has asked for
        return max([e["chunk"] for e in sim.events("publish")
                    if e.get("ota") and e.get("device") == device_name(m.uid)] or [-1])

    def settled():
        return m.count(_SETTLED)

    aimed = False
    while not settled():
        # The next cut: after a random wait, or soon after the last chunks are asked for (once:
        # the checksum over the whole package follows them); the hand-over as soon as it comes.
        until, aim = time.time() + rnd.uniform(0.5, 2.5), False
        while time.time() < until and not settled():
            if not aimed and asked() >= chunks - 3:
                aimed = aim = True
                time.sleep(rnd.uniform(0, 0.4))
                break
            # woken by the line itself: the unpacking at the next boot takes ~0.1 s here
            m.wait_for(_SETTLED, 0.05)
        if settled():
            break
        cut()
        if aim and out[-1] == "download":
            out[-1] = "verify"
        m.power_on()
    rec = {"new": 1} if m.count(r"ota: firmware \S+ verified") else {}
    for _ in range(3):  # the hand-over: while the package waits to be unpacked
        if "new" not in rec:
            break
        time.sleep(rnd.uniform(0, 0.1))
        rec = cut()
        m.power_on()
    for _ in range(8):  # bounded: a cut that lands in the unpacking again counts no boot
        if not (isinstance(rec.get("tries"), int) or "new" in rec) or \
                rec.get("tries", 0) >= _LAST_GOOD_TRIAL:
            break
        time.sleep(rnd.uniform(0.05, 0.5))  # before its first reading is acknowledged
        rec = cut()
        m.power_on()


@pytest.mark.parametrize("seed", [18])
def test_a_fleet_through_over_100_seeded_power_cuts(tmp_path, device_dir, sim, meters, seed):
    """Four meters updated at once, each cut off at seeded instants through the download, the
    checksum, the hand-over and the unpacking at boot, and its first boots on trial, over 100
    cuts in all; one meter's package is corrupted on the server. Each ends on v2 confirmed (the
    corrupted one: on v1 with FAILED), and every one reports."""
    import random
    import threading
    v2 = package(make_tree(str(tmp_path / "v2"), device_dir, "2.0.0"), "2.0.0")
    v1 = _v1(tmp_path, device_dir)
    uids = ["0a0000000%03d" % i for i in range(4)]
    fleet = [meters(base_config(sim, health_interval_s=5, cups=cups_for(i + 1)), v1, uid=u)
             for i, u in enumerate(uids)]
    for m in fleet:
        m.power_on()
    names = [device_name(u) for u in uids]
    assert sim.wait_for(lambda: all(current_version(sim, n) == "1.0.0" for n in names), 60)
    bad = sim.add_ota_package("meter-firmware", "2.0.1", data=v2)
    pkg = sim.store.ota_packages[bad["id"]]
    pkg.data = pkg.data[:5000] + bytes([pkg.data[5000] ^ 1]) + pkg.data[5001:]
    sim.assign_ota(device=names[3], firmware=bad["id"])
    roll_out(sim, KEY, v2, "2.0.0")
    phases = [[] for _ in fleet]
    threads = [threading.Thread(target=_cuts_through_an_update, daemon=True, args=(
        m, sim, random.Random(seed * 100 + i), -(-len(v2) // 512), phases[i]))
        for i, m in enumerate(fleet)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    assert not any(t.is_alive() for t in threads)
    t_end = time.time()
    cuts = [p for ps in phases for p in ps]
    print("power cuts: %d in %.0f s, by phase %s" % (len(cuts), t_end - t0, {
        k: cuts.count(k) for k in ("download", "verify", "switch", "first boot")}))
    assert len(cuts) >= 100, phases
    assert all(cuts.count(k) for k in ("download", "verify", "switch", "first boot")), phases
    for m, name in zip(fleet[:3], names):
        assert sim.wait_for(lambda: ("UPDATED", None) in fw_states(sim, name), 180), (
            fw_states(sim, name), m.text(t_end)[-3000:])
        assert sim.wait_for(lambda: current_version(sim, name) == "2.0.0", 60)
    assert sim.wait_for(lambda: [e for s, e in fw_states(sim, names[3]) if s == "FAILED"], 60)
    assert [e for s, e in fw_states(sim, names[3]) if s == "FAILED"] == [
        "SHA256 of the download does not match fw_checksum"]
    assert current_version(sim, names[3]) == "1.0.0"
    # Reporting, every one: readings after the last cut reach the server.
    def readings(name):
        return len([e for e in sim.telemetry(name) if "pulses" in e["values"]])
    seen = {n: readings(n) for n in names}
    assert sim.wait_for(lambda: all(readings(n) > seen[n] for n in names), 60), seen
