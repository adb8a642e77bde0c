"""python -m bench.options: what each way of shrinking the heap would save, measured on this
port (docs/benchmarks.md, "Options to reach the goals"). About 30 s; not part of `make bench`.

- ROMFS: the device tree's .mpy files in a ROMFS image (mpremote's romfs builder), mounted
  with vfs.VfsRom, against the same files on the filesystem. Bytecode, constant data and name
  strings then stay in the image (py/persistentcode.c: mp_reader_try_read_rom).
- Loading rarely used code only when needed: for each candidate module, its import cost
  (with what it imports loaded first) and what stays on the heap once it is unloaded again
  (its interned names).
- mpy-cross -O3 against the -O2 the firmware is built with (no line numbers in tracebacks).
MICROPYTHON=<binary> measures another build.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from bench.trees import build_trees
from lab.meterhost import MICROPYTHON
from tools.build_device import MPY_CROSS, ROOT, source_name, sources

PROBE = os.path.join(ROOT, "bench", "probe", "modcost.py")
_QSTR = re.compile(r"^qstr pool: n_pool=\d+, n_qstr=(\d+), n_str_data_bytes=\d+, "
                   r"n_total_bytes=(\d+)")

# The modules main.py and firmware/entry.py load, in their order (boot-only ones included: they
# are loaded too).
BOOT = ["firmware", "firmware.entry", "firmware.log", "firmware.store", "firmware.pulses",
        "firmware.telemetry", "firmware.hal", "firmware.hal.unix", "firmware.cups",
        "firmware.config", "firmware.startup", "umqtt", "umqtt.simple", "firmware.wiring",
        "firmware.readings", "firmware.backlog", "firmware.clock", "firmware.gesture",
        "firmware.led", "firmware.link", "firmware.pacing", "firmware.pipeline",
        "firmware.remote", "firmware.attributes", "firmware.credentials", "firmware.backoff",
        "firmware.states", "firmware.supervisor"]
# Candidates for loading on demand: (module, what must be loaded before it)
LAZY = [("firmware.provision", ["firmware.supervisor"]), ("firmware.remote", ["firmware.credentials"]),
        ("firmware.report", ["firmware.log"]), ("firmware.gesture", []),
        ("firmware.attributes", []), ("firmware.backlog", ["firmware.readings"]),
        ("firmware.startup", []), ("firmware.config", ["firmware.cups"])]


def modcost(src, mods, unload=False):
    args = [MICROPYTHON, "-X", "heapsize=2M", PROBE, src] + (["unload"] if unload else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH=".frozen",
                                MODCOST_MODULES=",".join(mods)))
    if r.returncode:
        raise RuntimeError("modcost %s: %s" % (mods, r.stdout[-800:] + r.stderr[-800:]))
    out, q, pending = {"imports": []}, [], []
    for line in r.stdout.splitlines():
        m = _QSTR.match(line)
        if m:
            q.append((int(m.group(1)), int(m.group(2))))
            continue
        p = line.split()
        if line.startswith("MODCOST import"):
            out["imports"].append({"module": p[2], "bytes": int(p[3]),
                                   "names": q[-1][0] - q[-2][0],
                                   "names_bytes": q[-1][1] - q[-2][1]})
        elif line.startswith("MODCOST unload"):
            out["unload_freed"] = int(p[3])
        elif line.startswith("MODCOST image"):
            out["image"] = int(p[2])
    return out


def romfs_image(tree, out):
    sys.path.insert(0, os.path.join(ROOT, ".venv", "lib",
                                    "python%d.%d" % sys.version_info[:2], "site-packages"))
    from mpremote.romfs import make_romfs
    src = tempfile.mkdtemp(prefix="romfs-src-")
    try:
        for d in ("firmware", "lib"):
            shutil.copytree(os.path.join(tree, d), os.path.join(src, d))
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree it builds
            img = make_romfs(src, mpy_cross=False)
    finally:
        shutil.rmtree(src)
    with open(out, "wb") as f:
        f.write(img)
    return out


def o3_tree(tree, out):
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(tree, out)
    for src, rel in sources():
        subprocess.run([MPY_CROSS, "-O3", "-s", source_name(rel), "-o",
                        os.path.join(out, rel + ".mpy"), src], check=True)
    return out


def measure(build_dir):
    trees = build_trees(build_dir)
    dev = trees["device"]
    img = romfs_image(dev, os.path.join(build_dir, "device.romfs"))
    files = modcost(dev, BOOT)
    rom = modcost(img, BOOT)
    o3 = modcost(o3_tree(dev, os.path.join(build_dir, "device-O3")), BOOT)
    lazy = []
    for mod, deps in LAZY:
        r = modcost(dev, deps + [mod], unload=True)
        imp = r["imports"][-1]
        lazy.append({"module": mod, "bytes": imp["bytes"], "names": imp["names"],
                     "names_bytes": imp["names_bytes"], "freed": r["unload_freed"]})
    return {"files": files, "romfs": rom, "o3": o3, "lazy": lazy}


def table(r):
    lines = ["import cost by module, in the boot's order (bytes; names: interned names):",
             "%-22s %8s %8s %8s %6s %8s" % ("module", ".mpy", "ROMFS", "saved", "names", "-O3")]
    tf = tr = to = 0
    for a, b, c in zip(r["files"]["imports"], r["romfs"]["imports"], r["o3"]["imports"]):
        lines.append("%-22s %8d %8d %8d %6d %8d" % (a["module"], a["bytes"], b["bytes"],
                                                    a["bytes"] - b["bytes"], a["names"],
                                                    c["bytes"]))
        tf, tr, to = tf + a["bytes"], tr + b["bytes"], to + c["bytes"]
    lines.append("%-22s %8d %8d %8d %6s %8d" % ("all", tf, tr, tf - tr, "", to))
    lines.append("ROMFS image: %d bytes (in flash on a board; here one bytes object, not counted)"
                 % r["romfs"].get("image", 0))
    lines.append("")
    lines.append("loaded only when needed: import cost, and what unloading gives back")
    lines.append("%-22s %8s %8s %8s %6s" % ("module", "import", "freed", "stays", "names"))
    for x in r["lazy"]:
        lines.append("%-22s %8d %8d %8d %6d" % (x["module"], x["bytes"], x["freed"],
                                               x["bytes"] - x["freed"], x["names"]))
    return "\n".join(lines)


def main():
    build = os.path.join(ROOT, "build", "options")
    print(table(measure(build)))


if __name__ == "__main__":
    main()
