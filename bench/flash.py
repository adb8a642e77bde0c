"""flash_writes_per_hour and max_pulses_lost_on_power_cut, at default settings, in real time.

Two meters of each kind run at default settings (publish_interval_s 60, persist_interval_s 60)
under a load of 1 pulse/s, with the probe printing a line per flash block program (from the
simulated chip, below LittleFS). Rate meter: in a window that starts 10 s after the meter is
running, file writes (bursts of programs) and block programs, scaled to an hour. Erases are
too rare for that window (LittleFS erases when a metadata log fills): bench/probe/flash_wear.py
measures erases per write over thousands of the same writes, and erases per hour are that times
the file writes per hour measured here. Cut meter: its flash image is
read every second; what a power cut would lose at that instant is the edges played so far minus
the index on flash (firmware: state/pulses.json, baseline: total.json). It is then cut (SIGKILL)
2 s before its next periodic flash write is due, the worst moment, and the index read back.
"""

import os
import subprocess
import time

from bench.rig import INDEX0, Steady, bench_times, fail, together
from bench.trees import BENCH_SRC
from lab.meterhost import MICROPYTHON

BURST_S = 0.5  # programs closer than this belong to one file write


def wear(trees, rig, n):
    """{kind: erases per write, programs per write} over n writes (bench/probe/flash_wear.py)."""
    path = ":".join([trees["device"], os.path.join(trees["baseline"], "lib"),
                     os.path.join(trees["device"], "lib"), ".frozen"])
    out = {}
    for kind in ("firmware", "baseline"):
        image = os.path.join(rig.work, "wear-%s.img" % kind)
        r = subprocess.run([MICROPYTHON, "-X", "heapsize=256K",
                            os.path.join(BENCH_SRC, "probe", "flash_wear.py"), image, kind, str(n)],
                           env=dict(os.environ, MICROPYPATH=path), capture_output=True, text=True,
                           timeout=120)
        if r.returncode:
            raise RuntimeError("flash_wear.py: " + r.stdout + r.stderr)
        _, _, programs, erases, writes = r.stdout.split()
        out[kind] = (int(erases) / int(writes), int(programs) / int(writes))
    return out


def _index_on_flash(m):
    if m.kind == "firmware":
        rec = m.record("pulses")
        return rec.get("index") if isinstance(rec, dict) else None
    raw = m.read_file("total.json")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _running_since(rig, m, timeout):
    """When the meter started reporting: the firmware's run state, the baseline's first publish."""
    if m.kind == "firmware":
        if m.wait_for(r"state: \S+ -> run", timeout) is None:
            return None
        return next(t for t, l in m.lines if "-> run" in l)
    if not rig.sim.wait_for(lambda: rig.publish_times(m), timeout, 0.02):
        return None
    return rig.publish_times(m)[0]


def _meter(rig, kind, s, tag):
    cfg = rig.config(**s.flash_cfg)
    m = rig.meter(kind, cfg, probe=True, env={"BENCH_FLASH": "1"}, tag=tag)
    m.power_on()
    load = Steady(m, 1.0)
    load.start()
    return m, load


def _rate(rig, kind, s, out):
    m, load = _meter(rig, kind, s, "-flashrate")
    try:
        start = _running_since(rig, m, 60)
        if start is None:
            fail(m, "not running after 60 s")
        a, b = start + 10, start + 10 + s.flash_window_s
        time.sleep(max(0.0, b + 0.5 - time.time()))
        scale = 3600.0 / s.flash_window_s
        programs = [t for t in bench_times(m, "flash_prog") if a <= t < b]
        writes = [t for i, t in enumerate(programs) if i == 0 or t - programs[i - 1] > BURST_S]
        out["flash_writes_per_hour"] = round(len(writes) * scale)
        out["flash_programs_per_hour"] = round(len(programs) * scale)
    finally:
        load.stop()
        m.close()


def _cut(rig, kind, s, out):
    m, load = _meter(rig, kind, s, "-flashcut")
    try:
        start = _running_since(rig, m, 60)
        if start is None:
            fail(m, "not running after 60 s")
        worst = 0
        cut_at = None
        while cut_at is None or time.time() < cut_at:
            played = m.pulses_delivered
            index = _index_on_flash(m)
            if index is not None:
                worst = max(worst, INDEX0 + played - index)
            if cut_at is None:
                bursts = [t for t in bench_times(m, "flash_prog") if t >= start + 10]
                if bursts:
                    cut_at = bursts[0] + s.flash_period_s - 2
            time.sleep(max(0.0, min(1.0, (cut_at or time.time() + 1) - time.time())))
        m.power_cut()
        load.stop()
        lost = INDEX0 + m.pulses_delivered - (_index_on_flash(m) or 0)
        out["max_pulses_lost_on_power_cut"] = max(worst, lost)
        out["power_cut_lost_pulses"] = lost
    finally:
        load.stop()
        m.close()


def flash_figures(rig, trees, s):
    out = {"firmware": {}, "baseline": {}}
    per_write = {}
    together(*[lambda f=f, k=k: f(rig, k, s, out[k]) for k in out for f in (_rate, _cut)],
             lambda: per_write.update(wear(trees, rig, s.wear_writes)))
    for kind, (erases, _programs) in per_write.items():
        out[kind]["flash_erases_per_1000_writes"] = round(erases * 1000, 1)
        if "flash_writes_per_hour" in out[kind]:
            out[kind]["flash_erases_per_hour"] = round(erases * out[kind]["flash_writes_per_hour"], 2)
    return out
