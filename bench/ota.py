"""OTA figures: one firmware download (issue 18) on the Unix port, as a meter in service does it.

The package is the bench's own device tree packed by tools/ota_package.py (what `make
ota-package` ships, ~100 KB; the smoke run takes its first ota_kb KB), uploaded to tbsim and assigned to this one meter (not the
profile: the other parts' meters must not see it). The meter runs in the e2e suite's heap
(HEAP below, tests/e2e/conftest.py), one pulse a second and readings every 2 s meanwhile, so
the figures are those of a download that shares the link and the heap with metering.

    ota_download_s_per_100kb      from the "downloading" line to the "verified" one, per 100 KB
    ota_wire_bytes_per_100kb      bytes on the meter's socket both ways in that time (a proxy),
                                  readings and health included, per 100 KB of package
    ota_heap_free_min_bytes       the lowest heap_free in the health messages (every 2 s,
                                  gc.collect() first: live data only) during the download
    ota_package_bytes             the package's size

The run stops at "verified": what follows (the unpacking at boot, the trial) is not a download
figure, and a package of the running version would be rolled back by design.
"""

import re
import time

from bench.proxy import CountingProxy
from bench.rig import Steady, fail
from firmware import version
from tools import ota_package

HEAP = "117K"  # tests/e2e/conftest.py HEAP: the heap the suite runs every meter in


def ota_figures(rig, s):
    data = ota_package.pack(rig.trees["device"], version.TITLE, "bench-ota")
    if s.ota_kb:
        data = data[:s.ota_kb * 1024]  # the smoke run: any bytes do, the run ends at "verified"
    proxy = CountingProxy(rig.sim.mqtt_port)
    cfg = rig.config(port=proxy.port, publish_interval_s=2, health_interval_s=2,
                     persist_interval_s=10)
    m = rig.meter("firmware", cfg, heap=HEAP, tag="-ota")
    m.power_on()
    load = Steady(m, 1.0)
    load.start()
    try:
        rig.need_readings(m, 2, 60, "ota: readings before the download")
        info = rig.sim.add_ota_package(version.TITLE, "bench-ota", data=data)
        rig.sim.assign_ota(device=m.device, firmware=info["id"])
        if not m.wait_for(r"ota: downloading firmware bench-ota", 60):
            fail(m, "ota: no download began")
        t0, b0 = _line_time(m, r"ota: downloading firmware bench-ota"), proxy.snapshot()
        if not m.wait_for(r"ota: firmware bench-ota verified", 300):
            fail(m, "ota: download not verified in time")
        t1, b1 = _line_time(m, r"ota: firmware bench-ota verified"), proxy.snapshot()
        if re.search(r"MemoryError|memory allocation failed|Traceback", m.text()):
            fail(m, "ota: trouble on the console")
        free = [e["values"]["heap_free"] for e in rig.sim.telemetry(m.device)
                if "heap_free" in e["values"] and t0 <= e["ts"] / 1000.0 <= t1]
    finally:
        load.stop()
        m.close()
        proxy.close()
    per = 100 * 1024.0 / len(data)
    out = {"ota_package_bytes": len(data),
           "ota_download_s_per_100kb": round((t1 - t0) * per, 1),
           "ota_wire_bytes_per_100kb": round((b1 - b0) * per)}
    if free:
        out["ota_heap_free_min_bytes"] = min(free)
    return {"firmware": out}


def _line_time(m, pattern):
    rx = re.compile(pattern)
    for t, line in list(m.lines):
        if rx.search(line):
            return t
    return None
