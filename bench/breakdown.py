"""Where the firmware's heap goes (results.json "breakdown"; docs/benchmarks.md, heap breakdown).

One probe run per transport (bench/probe/heapmap.py): a blank meter boots, provisions, sends
its attributes and publishes BENCH_STEADY readings. Every first import is measured in the
order main.py and firmware/entry.py make it (live heap and interned names before and after,
nested imports charged to themselves), every object firmware/entry.py builds is measured as
the heap its constructor leaves behind, and the live heap is taken after boot and while running.

Each module's import is then split four ways:
    code     bytecode, raw code structs and the module's tables, computed from the .mpy file
             (bench/mpyinfo.py): what freezing or a ROMFS keeps in flash
    consts   str/bytes/float/tuple constants rebuilt at load (also in flash when frozen)
    names    interned names, measured with micropython.qstr_info() (n_total_bytes): pool
             growth comes in steps (the pool doubles), so a module may carry a step
    objects  the rest: module and its dict, function and class objects, globals
A module unloaded after use (startup, config, cups, provision) keeps only its names.

`python -m bench.breakdown` (about 40 s, under the shared machine's lock for heavy runs) runs
only this and make bench's heap figures (bench/heap.py heap_figures: the live heap after boot
and while running), and prints both. It builds make bench's trees (build/bench): the trees'
paths are interned with the modules' file names, so another directory would move the figures.

The HAL row compares firmware/hal/unix.mpy with firmware/hal/esp32.mpy imported on this port
(bench/probe/halcost.py: a stand-in `network` module, imported first and not counted, lets
esp32.mpy load here), so the simulator's own share is visible.
"""

import os
import re
import subprocess

from bench import mpyinfo
from bench.rig import Steady, fail
from lab.meterhost import MICROPYTHON

_QSTR = re.compile(r"^qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), "
                   r"n_total_bytes=(\d+)")


# What bench/probe/heapmap.py wraps ("<module>:<callable>" or "<module>:<class>.<method>"),
# as the table names it: the labels live here, so that the probe interns no name of its own.
LABELS = {
    "firmware.log:Log": "Log()",
    "firmware.store:Store": "Store()",
    "firmware.telemetry:Payload": "telemetry buffer: Payload()",
    "firmware.startup:tls_context": "TLS: SSLContext + CA certificates",
    "firmware.startup:load_config": "config: startup.load_config() result",
    "firmware.hal.unix:Hal": "HAL: Hal()",
    "firmware.hal.unix:Hal.mount": "HAL: mount() (block device, LittleFS)",
    "firmware.hal.unix:Hal.pulse_input": "HAL: pulse_input() (feeder thread, doorbell)",
    "firmware.pulses:PulseCounter": "PulseCounter()",
    "firmware.link:Link": "Link() (write buffer)",
    "firmware.link:Link.open": "MQTT connection: Link.open() (client, sockets)",
    "firmware.backlog:Backlog": "backlog: Backlog() (RAM ring)",
    "firmware.gesture:BootGesture": "BootGesture()",
    "firmware.led:StatusLed": "StatusLed()",
    "firmware.remote:Remote": "Remote()",
    "firmware.remote:Remote.on_connect": "Remote.on_connect() (subscriptions)",
    "firmware.clock:Clock": "Clock()",
    "firmware.pipeline:Pipeline": "Pipeline() (with the pacer)",
    "firmware.supervisor:Supervisor": "Supervisor() (with backoff, marker)",
}


def _mpy_path(tree, module):
    rel = module.replace(".", "/")
    for cand in (os.path.join(tree, rel + ".mpy"), os.path.join(tree, rel, "__init__.mpy"),
                 os.path.join(tree, "lib", rel + ".mpy"),
                 os.path.join(tree, "lib", rel, "__init__.mpy")):
        if os.path.exists(cand):
            return cand
    return None


def word_size():
    """Bytes per machine word of the MicroPython binary measured (8 on 64-bit, 4 on 32-bit)."""
    r = subprocess.run([MICROPYTHON, "-c", "import sys; print(sys.maxsize)"], capture_output=True,
                       text=True, timeout=30)
    return 8 if int(r.stdout.strip() or 0) > 2 ** 32 else 4


def parse(lines, tree, word=8):
    """The probe's console lines -> {"modules": [...], "objects": [...], "phases": {...}}."""
    modules, objects, phases, resident = [], [], {}, set()
    stack = []  # [name, before, qstr_before, children_bytes, children_qstr_bytes, children_n]
    last_q = None
    pending_q = None  # qstr line wanted by the last imp+ or phase
    qstr_names = []
    launch = []  # the two qstr lines bench/probe/main.py prints around the probe's import
    for line in lines:
        m = _QSTR.match(line)
        if m:
            last_q = tuple(int(x) for x in m.groups())
            if not modules and not stack and len(launch) < 2:
                launch.append(last_q)
            if pending_q is not None:
                pending_q.append(last_q)
                pending_q = None
            continue
        if line.startswith("Q(") and line.endswith(")"):
            qstr_names.append(line[2:-1])
            continue
        parts = line.split()
        if len(parts) < 2 or parts[0] != "HEAPMAP":
            continue
        kind = parts[1]
        if kind == "imp+":
            entry = [parts[2], None, 0, 0, 0]
            stack.append(entry)
            pending_q = entry  # the qstr line right after is "before"
        elif kind == "imp-":
            entry = stack.pop()
            if parts[3] == "builtin":
                continue  # in ROM: nothing on the heap
            name, a, b = parts[2], int(parts[3]), int(parts[4])
            q0 = entry[5] if len(entry) > 5 else last_q
            q1 = last_q
            incl = b - a
            q_bytes = q1[3] - q0[3]
            q_n = q1[1] - q0[1]
            own = {"module": name, "bytes": incl - entry[2], "names": q_n - entry[4],
                   "names_bytes": q_bytes - entry[3], "depth": len(stack)}
            path = _mpy_path(tree, name)
            if path:
                info = mpyinfo.parse(open(path, "rb").read())
                own["code"] = mpyinfo.code_bytes(info, word)
                own["consts"] = mpyinfo.const_bytes(info, word)
                own["file_bytes"] = os.path.getsize(path)
            else:
                own["code"] = own["consts"] = own["file_bytes"] = 0  # built in (ROM)
            own["objects"] = own["bytes"] - own["code"] - own["consts"] - own["names_bytes"]
            modules.append(own)
            if stack:
                stack[-1][2] += incl
                stack[-1][3] += q_bytes
                stack[-1][4] += q_n
        elif kind == "obj":
            objects.append({"what": LABELS.get(parts[2], parts[2]), "bytes": int(parts[3])})
        elif kind == "phase":
            phases[parts[2]] = {"live": int(parts[3])}
            pending_q = []
            phases[parts[2]]["_q"] = pending_q
        elif kind == "resident":
            resident.update(parts[2:])
        elif kind in ("probe", "wraps"):
            phases["_" + kind] = int(parts[-1])
    # The probe's names are nearly all the meter's (bench/heap.py heap_figures says why): their
    # heap, left out with the probe's, is counted back.
    names_back = launch[1][3] - launch[0][3] if len(launch) == 2 else 0
    for p in phases.values():
        if isinstance(p, dict):
            q = p.pop("_q", [])
            if q:
                p["names"], p["names_bytes"] = q[0][1], q[0][3]
            p["live"] += names_back
    phases["_probe_names_bytes"] = names_back
    for mod in modules:
        mod["resident"] = int(mod["module"] in resident) if resident else 1
    return {"modules": modules, "objects": objects, "phases": phases,
            "interned_names": len(qstr_names)}


def run_heapmap(rig, trees, tls, steady=3, timeout=120):
    cfg = rig.config(tls=tls, publish_interval_s=2, persist_interval_s=10)
    m = rig.meter("firmware", cfg, probe=True, tag="-heapmap" + ("-tls" if tls else ""),
                  env={"BENCH_PROBE": "heapmap", "BENCH_STEADY": str(steady)})
    m.power_on()
    load = Steady(m, 1.0)
    load.start()
    try:
        if not m.wait_for(r"^HEAPMAP done", timeout):
            fail(m, "heap breakdown run incomplete")
    finally:
        load.stop()
    lines = [l for _t, l in list(m.lines)]
    m.close()
    return parse(lines, trees["device-probe"], word_size())


def hal_cost(trees):
    """Import cost of each HAL on this port: (unix bytes, esp32 bytes, unix names, esp32 names)."""
    out = {}
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe", "halcost.py")
    for hal in ("unix", "esp32"):
        r = subprocess.run([MICROPYTHON, "-X", "heapsize=2M", src, hal],
                           env=dict(os.environ, MICROPYPATH=os.path.join(trees["device"], "lib") +
                                    ":" + trees["device"] + ":.frozen"),
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"^HALCOST (\d+)$", r.stdout, re.M)
        q = [tuple(int(x) for x in g.groups()) for g in
             (_QSTR.match(l) for l in r.stdout.splitlines()) if g]
        if not m or len(q) != 2:
            raise RuntimeError("halcost %s: %s %s" % (hal, r.stdout[-500:], r.stderr[-500:]))
        out[hal] = {"bytes": int(m.group(1)), "names": q[1][1] - q[0][1],
                    "names_bytes": q[1][3] - q[0][3]}
    return out


def breakdown(rig, trees, s):
    result = {"plain": run_heapmap(rig, trees, False, s.steady_after),
              "tls": run_heapmap(rig, trees, True, s.steady_after),
              "hal": hal_cost(trees), "word": word_size()}
    return result


def summary(b):
    """Headline figures for results.json's firmware section (numbers only)."""
    out = {}
    for transport in ("plain", "tls"):
        mods = b[transport]["modules"]
        res = [m for m in mods if m["resident"]]
        out["heap_%s_modules_bytes" % transport] = sum(m["bytes"] for m in res)
        out["heap_%s_code_bytes" % transport] = sum(m["code"] + m["consts"] for m in res)
        out["heap_%s_names_bytes" % transport] = b[transport]["phases"].get("running", {}).get(
            "names_bytes", 0)
        out["heap_%s_running_bytes" % transport] = b[transport]["phases"].get(
            "running", {}).get("live", 0)
    return out


def table(b):
    lines = []
    for transport in ("plain", "tls"):
        r = b[transport]
        ph = r["phases"]
        lines.append("heap breakdown, %s MQTT: what each import and object leaves on the heap "
                     "(bytes, %d-bit Unix port)" % ("plain" if transport == "plain" else "TLS",
                                                    8 * b.get("word", 8)))
        lines.append("%-34s %7s %7s %7s %7s %5s %7s  %s" % (
            "module (in import order)", "total", "code", "consts", "names", "n", "objects",
            "resident"))
        tot = {"bytes": 0, "code": 0, "consts": 0, "names_bytes": 0, "names": 0, "objects": 0}
        for mod in r["modules"]:
            if mod["bytes"] == 0 and not mod["file_bytes"]:
                continue  # a built-in module: nothing on the heap
            lines.append("%-34s %7d %7d %7d %7d %5d %7d  %s" % (
                "  " * mod["depth"] + mod["module"], mod["bytes"], mod["code"], mod["consts"],
                mod["names_bytes"], mod["names"], mod["objects"],
                "yes" if mod["resident"] else "unloaded: names stay"))
            if mod["resident"]:
                for k in tot:
                    tot[k] += mod[k]
            else:
                tot["names_bytes"] += mod["names_bytes"]
                tot["names"] += mod["names"]
                tot["bytes"] += mod["names_bytes"]
        lines.append("%-34s %7d %7d %7d %7d %5d %7d" % (
            "modules, as resident", tot["bytes"], tot["code"], tot["consts"], tot["names_bytes"],
            tot["names"], tot["objects"]))
        lines.append("%-34s %7s" % ("objects (what the constructor or call leaves):", ""))
        seen = set()
        objs = 0
        for o in r["objects"]:
            label = o["what"]
            if label in seen and not label.startswith("MQTT connection"):
                continue
            seen.add(label)
            lines.append("  %-48s %7d" % (label, o["bytes"]))
        last_conn = [o["bytes"] for o in r["objects"] if o["what"].startswith("MQTT connection")]
        lines.append("  %-48s %7d" % ("(the device session: the last MQTT connection)",
                                       last_conn[-1] if last_conn else 0))
        for key in ("boot", "running"):
            p = ph.get(key, {})
            lines.append("%-34s %7d   interned names %d (%d bytes)" % (
                "live heap, %s" % ("after boot" if key == "boot" else "while running"),
                p.get("live", 0), p.get("names", 0), p.get("names_bytes", 0)))
        lines.append("")
    h = b["hal"]
    lines.append("HAL import on this port: firmware/hal/unix.mpy %d bytes (%d names), "
                 "firmware/hal/esp32.mpy %d bytes (%d names): the simulator's own %d bytes" % (
                     h["unix"]["bytes"], h["unix"]["names"], h["esp32"]["bytes"],
                     h["esp32"]["names"], h["unix"]["bytes"] - h["esp32"]["bytes"]))
    return "\n".join(lines)


def main():
    import json
    from bench import heap
    from bench.rig import Rig
    from bench.settings import FULL
    from bench.trees import build_trees
    trees = build_trees()
    rig = Rig(trees)
    try:
        print(table(breakdown(rig, trees, FULL)))
        print()
        print("heap figures (bench/heap.py, as make bench):",
              json.dumps(heap.heap_figures(rig, "firmware", FULL), sort_keys=True))
    finally:
        rig.close()


if __name__ == "__main__":
    main()
