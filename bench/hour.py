"""messages_per_hour: telemetry messages (and data points) tbsim accepted from one meter in an
hour at default settings, compressed 30 times as in the min_heapsize runs (publish_interval_s
2, health_interval_s 20, for 60 and 600): the messages of 120 s are those of an hour. Compared
with ThingsBoard Cloud's per-device limits: 7000 telemetry messages and 15000 data points an
hour (docs/thingsboard.md §7).
"""

import time

from bench.heap import HOUR_CFG
from bench.rig import Steady, fail, together

SPEEDUP = 30


def _run(rig, kind, s, out):
    m = rig.meter(kind, rig.config(**HOUR_CFG), tag="-hour")
    m.power_on()
    load = Steady(m, 1.0)
    load.start()
    try:
        if not rig.sim.wait_for(lambda: rig.publish_times(m), 60, 0.02):
            fail(m, "no telemetry within 60 s")
        t0 = rig.publish_times(m)[0]
        time.sleep(max(0.0, t0 + s.hour_s + 1 - time.time()))
        got = [e for e in rig.sim.events("publish") if e.get("device") == m.device and
               e.get("accepted") and e.get("topic") == "v1/devices/me/telemetry" and
               t0 <= e["t"] < t0 + s.hour_s]
        scale = 3600.0 / (s.hour_s * SPEEDUP)
        out["messages_per_hour"] = round(len(got) * scale)
        out["data_points_per_hour"] = round(sum(e.get("dataPoints", 0) for e in got) * scale)
    finally:
        load.stop()
        m.close()


def messages_per_hour(rig, s):
    out = {"firmware": {}, "baseline": {}}
    together(*[lambda k=k: _run(rig, k, s, out[k]) for k in out])
    return out
