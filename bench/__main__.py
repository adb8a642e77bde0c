"""python -m bench [--smoke] [--out FILE] [--keep] [--build DIR] [--only PARTS]   (make bench)

Prints the table and writes the figures (results.json) and, beside them, the pulse-loss table
as a chart (pulse_loss.png). Exit status 1 when a part could not be
measured at all; goals that are not met are reported, not failures.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

from bench import alloctrace, breakdown, flash, heap, hour, isr, loss, ota, power, report, timing, wire
from bench.rig import Rig, together
from bench.settings import FULL, SMOKE
from bench.trees import build_trees
from lab.meterhost import MICROPYTHON, ROOT


def _merge(into, part):
    for kind, figures in part.items():
        into.setdefault(kind, {}).update(figures)


def _machine():
    name = platform.system()
    try:
        with open("/etc/os-release") as f:
            name = dict(l.rstrip().split("=", 1) for l in f if "=" in l)["PRETTY_NAME"].strip('"')
    except (OSError, KeyError):
        pass
    return "%s, %s, %d cores" % (name, platform.machine(), os.cpu_count() or 0)


def _micropython():
    r = subprocess.run([MICROPYTHON, "-c", "import sys; print(sys.version)"], capture_output=True,
                       text=True, timeout=30)
    return r.stdout.strip()


PARTS = ("isr_alloc", "heap", "boot_times", "ota", "power", "pulse_loss", "heap_breakdown",
         "allocations", "min_heapsize", "wire", "messages_per_hour", "flash")


def run(s, out_path, keep=False, log=print, build_dir=None, only=None):
    trees = build_trees(build_dir) if build_dir else build_trees()
    rig = Rig(trees, keep=keep)
    figures, meta, problems = {}, {}, []
    detail = {}  # the heap breakdown and the allocation trace: tables, not figures
    started = time.time()

    def part(name, fn):
        t = time.time()
        try:
            result = fn()
        except Exception as e:  # a part that breaks is reported; the others still run
            problems.append("%s: %s: %s" % (name, type(e).__name__, e))
            log("bench: %s FAILED: %s" % (name, e))
            return
        if isinstance(result, tuple):
            result, extra = result
            if name == "pulse_loss":
                problems.extend("pulse_loss run not measured: %r" % (p,) for p in extra)
            else:
                meta.update(extra)
        if name == "min_heapsize":
            for kind, r in result.items():
                meta["min_heapsize_tried_%s" % kind] = " ".join(
                    "%sK:%s" % kv for kv in r.pop("_heap_tried", {}).items())
        _merge(figures, result)
        log("bench: %s done in %.0f s" % (name, time.time() - t))

    parts = [("isr_alloc", lambda: isr.isr_alloc(trees)),
             ("heap", lambda: _both(lambda k: heap.heap_figures(rig, k, s))),
             ("boot_times", lambda: timing.boot_times(rig, s)),
             ("ota", lambda: ota.ota_figures(rig, s)),
             ("power", lambda: power.power_accuracy(rig, s)),
             ("pulse_loss", lambda: loss.pulse_loss(rig, s)),
             ("heap_breakdown", lambda: _detail(detail, "breakdown",
                                                breakdown.breakdown(rig, trees, s),
                                                breakdown.summary)),
             ("allocations", lambda: _detail(detail, "allocations",
                                             alloctrace.run(rig, trees, s, s.steady_after,
                                                            s.cycles),
                                             alloctrace.summary))]
    # Long, not timing-sensitive: always side by side.
    long_parts = [("min_heapsize", lambda: heap.min_heapsize_both(rig, s)),
                  ("wire", lambda: wire.wire_bytes(rig, s)),
                  ("messages_per_hour", lambda: hour.messages_per_hour(rig, s)),
                  ("flash", lambda: flash.flash_figures(rig, trees, s))]
    if only:  # a maintainer's quick look at some parts (--only): the rest are not run
        parts = [p for p in parts if p[0] in only]
        long_parts = [p for p in long_parts if p[0] in only]
    try:
        if s.parallel:
            # Power accuracy times pulses against the host clock: it runs alone first, since on
            # two busy cores scheduling jitter would swamp what it measures. The rest, at once.
            timed = [p for p in parts if p[0] == "power"]
            for n, f in timed:
                part(n, f)
            together(*[lambda n=n, f=f: part(n, f) for n, f in parts + long_parts
                       if (n, f) not in timed])
        else:
            for n, f in parts:
                part(n, f)
            together(*[lambda n=n, f=f: part(n, f) for n, f in long_parts])
    finally:
        rig.close()
    for kind in ("firmware", "baseline"):
        figures.setdefault(kind, {})
        report.derive(figures[kind])
    results = {"firmware": figures["firmware"], "baseline": figures["baseline"],
               "limits": dict(report.LIMITS)}
    results["goals"] = report.judge(results)
    results.update(detail)
    meta.update(command="make bench" if s.name == "full" else "python -m bench --smoke",
                settings=s.name, machine=_machine(), python=platform.python_version(),
                micropython=_micropython(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                duration_s="%.0f" % (time.time() - started), problems="; ".join(problems))
    results["meta"] = meta
    report.write(results, out_path)
    return results, problems


def _detail(detail, key, value, summary):
    detail[key] = value
    return {"firmware": summary(value)}


def _both(fn):
    out = {}
    together(*[lambda k=k: out.__setitem__(k, fn(k)) for k in ("firmware", "baseline")])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a short run whose figures only need to be sane")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (flash images, consoles)")
    ap.add_argument("--build", help="where to build the device trees (default build/bench)")
    ap.add_argument("--only", help="run only these parts, comma-separated (e.g. heap,allocations;"
                    " all: %s)" % ",".join(PARTS))
    a = ap.parse_args(argv)
    s = SMOKE if a.smoke else FULL
    only = set(a.only.split(",")) if a.only else None
    if only and only - set(PARTS):
        ap.error("no such part: %s" % ", ".join(sorted(only - set(PARTS))))
    results, problems = run(s, a.out, a.keep, build_dir=a.build, only=only)
    print()
    print(report.table(results))
    print()
    if "breakdown" in results:
        print(breakdown.table(results["breakdown"]))
        print()
    if "allocations" in results:
        print(alloctrace.table(results["allocations"]))
    print("%s, %s; %s; MicroPython %s; TLS %s" % (results["meta"]["command"], results["meta"]["date"],
                                                 results["meta"]["machine"],
                                                 results["meta"]["micropython"],
                                                 results["meta"].get("tls", "n/a")))
    print("written to %s" % os.path.relpath(a.out, os.getcwd()))
    # The pulse-loss table as a picture, beside results.json (lab/charts.py).
    if not only or "pulse_loss" in only:
        from lab.charts import loss_chart
        chart = os.path.join(os.path.dirname(os.path.abspath(a.out)), "pulse_loss.png")
        loss_chart(chart, results)
        print("pulse-loss chart written to %s" % os.path.relpath(chart, os.getcwd()))
    for p in problems:
        print("problem: %s" % p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
