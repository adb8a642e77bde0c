"""Firmware updates over the air (issue 18), end to end: the real firmware on the Unix port with
the ESP32-sized heap, updated by tbsim as ThingsBoard does it (an OTA package uploaded and
assigned to the device profile, fw_* shared attributes, chunks over MQTT).

Versions: v1 is what the meter boots from its deployed tree, v2 a package built from the same
tree stamped 2.0.0 (firmware/version.mpy); the test tells them apart by the boot line and by
current_fw_version on the server. Deadlines are generous (a loaded 2-core machine)."""

import time

import pytest
from e2e_support import KEY, base_config, device_name
from ota_support import current_version, fw_states, make_tree, package, roll_out

from conftest import TICKS_ENV
from lab.meterhost import VirtualMeter

NAME = device_name()
# The heap: main at fa2fee6 needs 113K to boot at all (conftest.HEAP is 111K); a boot that
# loads the firmware from an OTA slot on flash (LittleFS) leaves the heap in smaller pieces and
# needs more (measured with this tree: 117K fails at the Supervisor's first dict growth, 120K
# runs with 24 KB free). Until the boot's footprint is cut, these tests run at 120K.
OTA_HEAP = "120K"


@pytest.fixture
def meters(tmp_path):
    """Virtual meters booting from a given tree (conftest's fixture always boots build/device);
    the same checks at the end: no MemoryError anywhere, the tracebacks a test expects."""
    made = []

    def make(cfg, tree, tracebacks=0, **kw):
        kw["env"] = dict(TICKS_ENV, **(kw.get("env") or {}))
        kw.setdefault("heap", OTA_HEAP)
        m = VirtualMeter(str(tmp_path / "meter"), cfg, tree, **kw)
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


def test_update_from_v1_to_v2(tmp_path, device_dir, sim, meters):
    v1 = _v1(tmp_path, device_dir)
    v2 = package(make_tree(str(tmp_path / "v2"), device_dir, "2.0.0"), "2.0.0")
    m = meters(_cfg(sim), v1)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    assert sim.wait_for(lambda: current_version(sim, NAME) == "1.0.0", 20)
    t0 = time.time()
    roll_out(sim, KEY, v2, "2.0.0")
    assert m.wait_for(r"ota: downloading firmware 2\.0\.0 \(%d bytes, SHA256\)" % len(v2), 30), m.text()
    assert _booted(m, "2.0.0", 180, t0), m.text()[-3000:]
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
    # The slot record: v2 confirmed, and the next boot stays on it.
    m.power_cut()
    assert m.record("bootslot") == {"run": 1}
    t1 = time.time()
    m.power_on()
    assert _booted(m, "2.0.0", 30, t1), m.text(t1)
    assert m.wait_for(r"state: \S+ -> run", 30, t1)
    assert not m.count(r"ota: downloading", t1)
