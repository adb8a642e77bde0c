"""Heap figures (through bench/probe) and min_heapsize (the deployed trees, no probe).

min_heapsize: the smallest `-X heapsize` (4 KB steps) with which boot, provisioning, the
attributes and an hour of telemetry complete: `need` readings acknowledged by tbsim with no
MemoryError (or any sign of one) on the console and no reset. The hour is compressed 30 times
(publish_interval_s 2, health_interval_s 20: the defaults 60 and 600 divided by 30), so it
holds an hour's messages at default settings. The search is a parallel bisection: a candidate
that reaches 3 readings counts as passing for the next round, and must then finish the hour;
failures nearly always come at boot or provisioning, so rounds are short.
"""

import re
import time

from bench.rig import Steady, bench_value, fail, together

BAD = re.compile(r"MemoryError|memory allocation failed|low memory|Traceback|baseline: \w+Error")
HOUR_CFG = {"publish_interval_s": 2, "health_interval_s": 20, "persist_interval_s": 10}


def heap_figures(rig, kind, s):
    """Probe run: first boot with provisioning, then steady state and allocation per cycle."""
    cfg = rig.config(publish_interval_s=2, persist_interval_s=10)
    m = rig.meter(kind, cfg, probe=True, tag="-heap",
                  env={"BENCH_FIGURES": "1", "BENCH_STEADY": str(s.steady_after),
                       "BENCH_CYCLES": str(s.cycles)})
    m.power_on()
    load = Steady(m, 1.0)  # one pulse a second: 3.6 kW at 1000 imp/kWh
    load.start()
    try:
        timeout = 20 + 2.5 * (s.steady_after + s.cycles + 2)
        m.wait_for(r"^BENCH alloc_per_cycle_bytes ", timeout)
    finally:
        load.stop()
    out = {}
    for key in ("heap_after_boot_bytes", "heap_peak_bytes", "heap_steady_bytes",
                "alloc_per_publish_bytes", "alloc_per_publish_max_bytes", "alloc_per_cycle_bytes",
                "probe_bytes"):
        v = bench_value(m, key)
        if v is not None:
            out[key] = v
    out.update(probe_names(m.text()))
    # The probe's names are nearly all the meter's own (its wrappers have the names of what they
    # wrap), interned before the meter only because the probe loads first: the probe's heap
    # (probe_bytes, left out of every figure) holds them and the pools they opened, which the
    # meter alone would hold. Counted back as the meter's; the few that are only the probe's (its
    # module's name and file) are then counted with the meter, about 100 bytes too many.
    for key in ("heap_after_boot_bytes", "heap_peak_bytes", "heap_steady_bytes"):
        if key in out and "probe_names_bytes" in out:
            out[key] += out["probe_names_bytes"]
    if BAD.search(m.text()) or "alloc_per_cycle_bytes" not in out:
        fail(m, "heap run incomplete")
    m.close()
    return out


def name_pools(n):
    """How many name pools n interned names take: the first holds 20, each next twice the one
    before (py/qstr.c; docs/benchmarks.md, the probe's own names), so a 6th opens past 620."""
    pools, room, size = 0, 0, 20
    while room < n:
        pools, room, size = pools + 1, room + size, size * 2
    return pools


_QSTR = re.compile(r"^qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=\d+, "
                   r"n_total_bytes=(\d+)", re.M)


def probe_names(text):
    """Names from a probe run's console: probe_names, what bench/probe/main.py and the probe
    intern before the meter starts (the two qstr_info lines around the probe's import: an upper
    bound on the names the probe adds to the meter's, since the meter may intern some of the
    same) and probe_names_bytes, their heap (pools included); heap_names_steady, the names
    while running (the line after heap_steady_bytes)."""
    out = {}
    q = _QSTR.findall(text)
    if len(q) >= 2:
        out["probe_names"] = int(q[1][1]) - int(q[0][1])
        out["probe_names_bytes"] = int(q[1][2]) - int(q[0][2])
    m = re.search(r"^BENCH heap_steady_bytes \d+\n(?:.*\n)*?qstr pool: n_pool=(\d+), n_qstr=(\d+),",
                  text, re.M)
    if m:
        out["heap_names_steady"] = int(m.group(2))
        out["heap_name_pools_steady"] = int(m.group(1))
    return out


class _Candidate:
    def __init__(self, rig, kind, heap_k):
        self.rig, self.heap_k = rig, heap_k
        self.meter = rig.meter(kind, rig.config(**HOUR_CFG), heap="%dK" % heap_k,
                               tag="-heap%d" % heap_k)
        self.meter.power_on()
        self.load = Steady(self.meter, 1.0)
        self.load.start()
        self.started = time.time()

    def verdict(self, need, timeout):
        m = self.meter
        if BAD.search(m.text()) or m.exits:
            return "fail"
        n = len(self.rig.readings(m))
        if n >= need and (self.rig.sim.device(m.device) or {}).get("clientAttributes"):
            return "pass"
        return "fail" if time.time() - self.started > timeout else "running"

    def stop(self):
        self.load.stop()
        self.meter.close()


def _decide(cands, need, timeout):
    while True:
        v = {c.heap_k: c.verdict(need, timeout) for c in cands}
        if "running" not in v.values():
            return v
        time.sleep(0.2)


def min_heapsize(rig, kind, s, out):
    """Fills out['min_heapsize_bytes'] (and the candidates tried)."""
    lo, hi, step = s.heap_lo_k, s.heap_hi_k, 4
    fail_k, pass_k = None, None
    provisional = {}  # heap_k -> running candidate that reached 3 readings
    tried = {}  # heap_k -> verdict at 3 readings; the answer's is its full hour's
    early = 3
    early_timeout = 45 + 2 * early
    hour_timeout = 60 + 2.5 * s.hour_readings
    while True:
        low = fail_k if fail_k is not None else lo - step
        high = pass_k if pass_k is not None else hi + step
        grid = list(range(low + step, high, step))
        if not grid:
            if pass_k is None:
                break  # nothing passes up to hi
            c = provisional.pop(pass_k)
            v = _decide([c], s.hour_readings, hour_timeout)[pass_k]
            tried[pass_k] = v
            c.stop()
            if v == "pass":
                break
            fail_k, pass_k = pass_k, None  # failed late: the answer is higher
            bigger = sorted(k for k in provisional if k > fail_k)
            if bigger:
                pass_k = bigger[0]
            continue
        k = min(s.heap_parallel, len(grid))
        picks = sorted({grid[round(i * (len(grid) - 1) / max(k - 1, 1))] for i in range(k)})
        if k == 1:
            picks = [grid[len(grid) // 2]]
        cands = [_Candidate(rig, kind, h) for h in picks]
        verdicts = _decide(cands, early, early_timeout)
        for c in cands:
            tried[c.heap_k] = verdicts[c.heap_k]
            if verdicts[c.heap_k] == "pass":
                provisional[c.heap_k] = c
            else:
                c.stop()
        passed = [h for h in picks if verdicts[h] == "pass"]
        failed = [h for h in picks if verdicts[h] != "pass"]
        if passed:
            pass_k = min(passed)
        below = [h for h in failed if pass_k is None or h < pass_k]
        if below:
            fail_k = max(below)
        # Only the lowest passing candidate (and the next one, should it fail late) keep running.
        keep = sorted(provisional)[:2]
        for h in list(provisional):
            if h not in keep:
                provisional.pop(h).stop()
    for c in provisional.values():
        c.stop()
    if pass_k is not None:
        out["min_heapsize_bytes"] = pass_k * 1024
    out["_heap_tried"] = {str(h): v for h, v in sorted(tried.items())}


def min_heapsize_both(rig, s):
    results = {kind: {} for kind in ("firmware", "baseline")}
    together(*[lambda k=k: min_heapsize(rig, k, s, results[k]) for k in results])
    for kind, r in results.items():
        if "min_heapsize_bytes" not in r:
            raise RuntimeError("%s: nothing up to %d KB ran an hour (%s)" % (
                kind, s.heap_hi_k, r.get("_heap_tried")))
    return results
