"""first_boot_ms and boot_to_telemetry_ms, measured from outside: from the moment the process
is started to the moment tbsim accepted (and acknowledged) the first telemetry message.

first boot: a blank meter provisions, reconnects with its token, sends the attributes and its
first reading. Then the power is cut and restored: boot_to_telemetry is that provisioned boot.
Both kinds run side by side; the median of `reps` meters is reported. publish_interval_s is 2.
The firmware takes its first reading one publish interval after boot, the baseline as soon as
it is connected, so boot_to_connect_ms (to the device session tbsim accepted) is given too.
"""

import statistics
import time

from bench.rig import together

def _first_publish_after(rig, m, t0, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        after = [t for t in rig.publish_times(m, qos=1) if t >= t0]
        if after:
            return after[0]
        time.sleep(0.005)
    return None


def _connected_after(rig, m, t0):
    got = [e["t"] for e in rig.sim.events("connect") if e.get("device") == m.device and
           e.get("session") == "device" and e.get("returnCode") == 0 and e["t"] >= t0]
    return got[0] if got else None


def _one(rig, kind, rep, out):
    cfg = rig.config(publish_interval_s=2, persist_interval_s=10)
    m = rig.meter(kind, cfg, tag="-boot%d" % rep)
    t0 = time.time()
    m.power_on()
    t1 = _first_publish_after(rig, m, t0, 30)
    if t1 is None:
        out.setdefault("failed", []).append(m.text()[-800:])
    else:
        out.setdefault("first_boot_ms", []).append((t1 - t0) * 1000)
        out.setdefault("first_boot_to_connect_ms", []).append((_connected_after(rig, m, t0) - t0) * 1000)
        time.sleep(0.3)
        m.power_cut()
        t2 = time.time()
        m.power_on()
        t3 = _first_publish_after(rig, m, t2, 30)
        if t3 is not None:
            out.setdefault("boot_to_telemetry_ms", []).append((t3 - t2) * 1000)
            out.setdefault("boot_to_connect_ms", []).append((_connected_after(rig, m, t2) - t2) * 1000)
    m.close()


def boot_times(rig, s):
    raw = {kind: {} for kind in ("firmware", "baseline")}
    for rep in range(s.boot_reps):
        together(*[lambda k=k: _one(rig, k, rep, raw[k]) for k in raw])
    for kind, r in raw.items():
        if r.pop("failed", None) or "boot_to_telemetry_ms" not in r:
            raise RuntimeError("%s: a boot did not reach telemetry" % kind)
    return {kind: {k: round(statistics.median(v)) for k, v in r.items()} for kind, r in raw.items()}
