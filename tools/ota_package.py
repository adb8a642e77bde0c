"""Build a firmware update package (OTA, issue 18) from a device tree.

    python tools/ota_package.py [TREE] [-o FILE] [--title T --version V]

TREE is a device tree built by tools/build_device.py (default: build the board tree,
build/device-xtensawin, as `make deploy` does). The package is what a utility uploads to
ThingsBoard as an OTA package (README: firmware updates); the meter streams it to flash,
checks it and unpacks it into its spare slot (firmware/ota.py). Its format, readable from
the front with little memory:

    b"MOTA1 <n>\\n"          a header line: the manifest's length in bytes, decimal
    <n bytes of JSON>        {"title": T, "version": V, "files": [[path, size, sha256], ...]}
    the files' bytes         in the manifest's order, back to back

Only the firmware package goes in (firmware/**.mpy): that is the firmware itself, with
firmware/entry.py, which main.py runs once the firmware tree is chosen (the meter's build, setup
mode's start, the last-chance handler). The boot loader, main.py, boot.py and bootslot.py, is
never replaced over the air: the code that decides whether an update proved itself must not be
the update's own. The title and version default to what build_device.py stamped into the tree.
"""

import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools import build_device  # noqa: E402

MAGIC = b"MOTA1 "
MANIFEST_MAX = 8192  # firmware/ota.py _MANIFEST_MAX
PACKAGE_MAX = 1048576  # firmware/ota.py _MAX


def files_of(tree):
    """(path in the tree, relative path) of the firmware package's files, sorted."""
    out = []
    base = os.path.join(tree, "firmware")
    if not os.path.exists(os.path.join(base, "__init__.mpy")):
        raise SystemExit("ota_package: %s has no firmware/__init__.mpy (build it with "
                         "tools/build_device.py)" % tree)
    for dirpath, dirs, names in os.walk(base):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".mpy"):
                p = os.path.join(dirpath, name)
                out.append((p, os.path.relpath(p, tree).replace(os.sep, "/")))
    return sorted(out, key=lambda f: f[1])


def pack(tree, title, version):
    """The package's bytes."""
    entries, blobs = [], []
    for path, rel in files_of(tree):
        with open(path, "rb") as f:
            data = f.read()
        entries.append([rel, len(data), hashlib.sha256(data).hexdigest()])
        blobs.append(data)
    manifest = json.dumps({"title": title, "version": version, "files": entries},
                          separators=(",", ":")).encode()
    if len(manifest) > MANIFEST_MAX:
        raise SystemExit("ota_package: manifest of %d bytes; the meter reads at most %d"
                         % (len(manifest), MANIFEST_MAX))
    data = MAGIC + b"%d\n" % len(manifest) + manifest + b"".join(blobs)
    if len(data) > PACKAGE_MAX:
        raise SystemExit("ota_package: %d bytes; the meter takes at most %d" % (len(data), PACKAGE_MAX))
    return data


def stamped(tree, dest, title, version, march=None):
    """A copy of a built device tree at dest whose firmware says title and version (its
    firmware/version module compiled again): an update a meter can tell from what it runs.
    `make sim OTA=1` (lab/sim.py) packs one this way."""
    import shutil
    import subprocess
    import tempfile
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(tree, dest)
    module = build_device.VERSION_MODULE
    with tempfile.TemporaryDirectory() as gen:
        src = os.path.join(gen, "version.py")
        with open(src, "w") as f:
            f.write(build_device.version_module_text(title, version, "tools/ota_package.py"))
        cmd = [build_device.MPY_CROSS, "-O2", "-s", build_device.source_name(module), "-o",
               os.path.join(dest, module + ".mpy"), src]
        if march:
            cmd.insert(1, "-march=" + march)
        subprocess.run(cmd, check=True)
    return dest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?", help="a built device tree (default: build the board's)")
    ap.add_argument("-o", "--output", help="package file (default build/ota/<title>-<version>.bin)")
    ap.add_argument("--march", default="xtensawin", help="mpy-cross -march when building the tree")
    ap.add_argument("--title")
    ap.add_argument("--version")
    a = ap.parse_args(argv)
    tree = a.tree
    title, version = a.title, a.version
    if title is None or version is None:
        t, v, _source = build_device.firmware_version()
        title, version = title or t, version or v
    if tree is None:
        tree = os.path.join(ROOT, "build", "device-" + (a.march or "bytecode"))
        with build_device.tree_lock(tree):  # packed as built (tools/build_device.py)
            build_device.build(tree, a.march or None, board=True)
            data = pack(tree, title, version)
    else:
        data = pack(tree, title, version)
    out = a.output or os.path.join(ROOT, "build", "ota", "%s-%s.bin" % (title, version))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    print("ota_package: %s: %s %s, %d files, %d bytes, SHA256 %s" % (
        os.path.relpath(out), title, version, len(files_of(tree)), len(data),
        hashlib.sha256(data).hexdigest()))
    print("ota_package: upload it to ThingsBoard as an OTA package of type FIRMWARE with title "
          "%r and version %r (checksum SHA256 or CRC32), then assign it to the meters' device "
          "profile (README: firmware updates)" % (title, version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
