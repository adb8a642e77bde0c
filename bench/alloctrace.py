"""Every allocating line of the meter's main-loop steps (results.json "allocations";
docs/benchmarks.md, per-step allocations).

The traced tree is the probe tree with firmware/ and umqtt.simple recompiled from instrumented
sources: before every statement inside a function, a call `_mt(<site>)` (bench/probe/
alloctrace.py), where each site is one source line. With the collector off, what
gc.mem_alloc() grows by between two such calls is charged to the first one's line: the
statement's own allocations and those of any C code it calls (a one-line body such as
`if x: return y` has no probe of its own and is charged to its header's line). The probe
traces every main-loop step, and every gap between two steps (the main loop's sleep in the
HAL), for BENCH_CYCLES publish cycles once BENCH_STEADY readings were acknowledged. Per
publishing step and per cycle, each line's bytes are the median over the steps (cycles) of
that kind; the instrumentation itself allocates nothing (a step's total matches
alloc_per_publish_bytes of the untraced heap run, a cycle's alloc_per_cycle_bytes).
"""

import ast
import os
import shutil
import subprocess

from bench.rig import Steady, fail
from tools.build_device import MPY_CROSS, ROOT, source_name, sources


def _probe_lines(src):
    """Line numbers (1-based) before which a probe can go: the first statement on a line,
    inside a function, alone at the start of its line."""
    tree = ast.parse(src)
    lines = src.splitlines()
    out = set()

    def body_stmts(node):
        for field in ("body", "orelse", "finalbody"):
            for st in getattr(node, field, None) or []:
                yield st
        for h in getattr(node, "handlers", None) or []:
            for st in h.body:
                yield st

    def visit(node, in_func):
        for st in body_stmts(node):
            if in_func and not isinstance(st, (ast.Global, ast.Nonlocal)):
                first = min([st.lineno] + [d.lineno for d in getattr(st, "decorator_list", [])])
                text = lines[first - 1]
                if text.lstrip().startswith("elif"):
                    pass  # an elif is an If in the orelse of the one before: not a new line
                elif not text[:st.col_offset].strip() or first != st.lineno:
                    out.add((first, len(text) - len(text.lstrip())))
            visit(st, in_func or isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return sorted(out)


def instrument(src, first_site, label):
    """(instrumented source, [(site, label, line, text)])."""
    lines = src.splitlines()
    sites = []
    insert = {}
    for n, (line, indent) in enumerate(_probe_lines(src)):
        site = first_site + n
        sites.append((site, label, line, lines[line - 1].strip()))
        insert[line] = " " * indent + "_mt(%d)" % site
    out = ["from alloctrace import _mt"]
    for i, text in enumerate(lines, 1):
        if i in insert:
            out.append(insert[i])
        out.append(text)
    return "\n".join(out) + "\n", sites


def build_traced(probe_tree, out):
    """A copy of the probe tree with every firmware/ and umqtt module instrumented."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(probe_tree, out)
    sites = [(0, "(outside the traced code)", 0, "")]
    work = os.path.join(out, "_traced_src")
    os.makedirs(work)
    for src, rel in sources():
        with open(src) as f:
            text = f.read()
        label = os.path.relpath(src, ROOT)
        traced, s = instrument(text, len(sites), label)
        sites.extend(s)
        tmp = os.path.join(work, rel.replace("/", "_") + ".py")
        with open(tmp, "w") as f:
            f.write(traced)
        subprocess.run([MPY_CROSS, "-O2", "-s", source_name(rel), "-o",
                        os.path.join(out, rel + ".mpy"), tmp], check=True)
    shutil.rmtree(work)
    return out, sites


def run(rig, trees, s, steady=3, cycles=3, timeout=150):
    tree, sites = build_traced(trees["device-probe"], trees["device-probe"] + "-traced")
    # A traced step runs slower than an untraced one (a probe call before every statement):
    # past a third of the debounce, firmware/pulses.py would not trust its chunk, and its
    # pulse would leave the power (and its float) unchanged, a path the untraced meter does
    # not take. A debounce of 300 ms keeps the traced steps well inside the trusted third at
    # this load (a pulse a second), and changes nothing else a cycle allocates.
    cfg = rig.config(publish_interval_s=2, persist_interval_s=10, pulse_min_interval_ms=300)
    m = rig.meter("firmware", cfg, probe=True, tag="-alloctrace",
                  env={"BENCH_PROBE": "alloctrace", "BENCH_STEADY": str(steady),
                       "BENCH_CYCLES": str(cycles), "BENCH_SITES": str(len(sites) + 1)})
    m.device_dir = tree
    m.power_on()
    load = Steady(m, 1.0)
    load.start()
    try:
        if not m.wait_for(r"^ALLOC done", timeout):
            fail(m, "allocation trace incomplete")
    finally:
        load.stop()
    lines = [l for _t, l in list(m.lines)]
    m.close()
    return parse(lines, sites)


def _median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else 0


def parse(lines, sites):
    """-> {"publish": {...}, "cycle": {...}, "sites": {site: [file, line, text]}}: per kind,
    total (median bytes) and lines [(site, median bytes)] largest first."""
    steps = []  # (kind, published, (net, requested), {site: (net, requested)})
    for line in lines:
        p = line.split()
        if line.startswith(("ALLOC step ", "ALLOC gap ")):
            steps.append((p[1], int(p[2]), (int(p[3]), int(p[4])), {}))
        elif line.startswith("ALLOC site ") and steps:
            steps[-1][3][int(p[2])] = (int(p[3]), int(p[4]))
    # A publishing step is one after which the acknowledged count went up; a cycle is every
    # step and gap from just after one publishing step up to and including the next.
    pub, cycles = [], []
    cur = None
    prev = steps[0][1] if steps else 0
    for kind, published, total, by_site in steps:
        if cur is not None:
            for k, (n, r) in by_site.items():
                o = cur[1].get(k, (0, 0))
                cur[1][k] = (o[0] + n, o[1] + r)
            cur[0] = (cur[0][0] + total[0], cur[0][1] + total[1])
        if kind == "gap":
            continue
        if published > prev:
            pub.append((total, by_site))
            if cur is not None:
                cycles.append(tuple(cur))
            cur = [(0, 0), {}]
        prev = published
    out = {"sites": {str(i): [f, ln, t] for i, f, ln, t in sites}}
    for kind, group in (("publish", pub), ("cycle", cycles)):
        keys = {k for _t, d in group for k in d}
        per = {k: (_median([d.get(k, (0, 0))[0] for _t, d in group]),
                   _median([d.get(k, (0, 0))[1] for _t, d in group])) for k in keys}
        out[kind] = {"net": _median([t[0] for t, _d in group]),
                     "requested": _median([t[1] for t, _d in group]), "steps": len(group),
                     "lines": sorted(([k, n, r] for k, (n, r) in per.items() if n or r),
                                     key=lambda x: (-x[2], -x[1]))}
    return out


def table(a, top=25):
    lines = []
    for kind, title in (("publish", "one publishing step (sample, payload, publish, PUBACK)"),
                        ("cycle", "one 2 s publish cycle at 1 pulse/s (idle steps and sleeps too)")):
        r = a[kind]
        lines.append("allocations, %s: net %d bytes, requested %d (median of %d), by line:" % (
            title, r["net"], r["requested"], r["steps"]))
        lines.append("  %6s %6s  %-30s %s" % ("asked", "net", "line", "source"))
        for site, n, req in r["lines"][:top]:
            f, ln, text = a["sites"][str(site)]
            where = "%s:%d" % (f, ln) if ln else f
            lines.append("  %6d %6d  %-30s %s" % (req, n, where, text[:64]))
        rest = r["lines"][top:]
        if rest:
            lines.append("  %6d %6d  (%d more lines)" % (sum(x[2] for x in rest),
                                                        sum(x[1] for x in rest), len(rest)))
        lines.append("")
    return "\n".join(lines)


def summary(a):
    """Headline figures for results.json's firmware section (numbers only)."""
    return {"alloc_traced_publish_bytes": a["publish"]["net"],
            "alloc_traced_publish_requested_bytes": a["publish"]["requested"],
            "alloc_traced_cycle_bytes": a["cycle"]["net"],
            "alloc_traced_cycle_requested_bytes": a["cycle"]["requested"]}
