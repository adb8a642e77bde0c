"""Erase an ESP32 and write the pinned MicroPython release, only after the .bin is verified.

    python tools/flash.py --port /dev/ttyUSB0 [--bin FILE] [--release esp32/release.json]
                          [--baud 460800] [--esptool PATH] [--dry-run]

The release is pinned in esp32/release.json (version, file name, size, sha256, offset). The
.bin is never downloaded here: the technician saves it from the release page into esp32/.
Before esptool is started at all, the file must exist, have the pinned size and sha256, and
start with an ESP32 image header (magic 0xE9, chip id 0 = ESP32). Any mismatch stops with
nothing written. --dry-run prints the two esptool commands instead of running them.
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "esp32", "release.json")
ESPTOOL = os.path.join(os.path.dirname(sys.executable), "esptool")
_CHIP_IDS = {"esp32": 0}  # esptool's image header chip id (ESP32 = 0)


class FlashError(Exception):
    pass


def load_release(path):
    try:
        with open(path) as f:
            rel = json.load(f)
    except (OSError, ValueError) as e:
        raise FlashError("cannot read the pinned release %s: %s" % (path, e))
    for key in ("file", "sha256", "size", "offset", "chip", "version"):
        if key not in rel:
            raise FlashError("%s: no %r" % (path, key))
    if not re.fullmatch(r"[0-9a-f]{64}", str(rel["sha256"])):
        raise FlashError("%s: sha256 is not set to a 64-digit hex checksum; a maintainer "
                         "fills it from the release (see docs/deploy.md); refusing to flash"
                         % path)
    if rel["chip"] not in _CHIP_IDS:
        raise FlashError("%s: unsupported chip %r" % (path, rel["chip"]))
    return rel


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(bin_path, rel):
    """Raise FlashError unless bin_path is exactly the pinned release."""
    if not os.path.isfile(bin_path):
        raise FlashError("%s not found. Download %s (MicroPython %s) from %s into %s; "
                         "nothing was written" % (bin_path, rel["file"], rel["version"],
                                                  rel.get("download_page", "the release page"),
                                                  os.path.dirname(bin_path) or "."))
    size = os.path.getsize(bin_path)
    if size != rel["size"]:
        raise FlashError("%s is %d bytes; the pinned %s is %d bytes (wrong or truncated "
                         "download); nothing was written" % (bin_path, size, rel["file"],
                                                             rel["size"]))
    got = sha256_file(bin_path)
    if got != rel["sha256"]:
        raise FlashError("%s: sha256 %s does not match the pinned %s; nothing was written"
                         % (bin_path, got, rel["sha256"]))
    with open(bin_path, "rb") as f:
        head = f.read(16)
    if len(head) < 16 or head[0] != 0xE9 or int.from_bytes(head[12:14], "little") != \
            _CHIP_IDS[rel["chip"]]:
        raise FlashError("%s is not an %s firmware image; nothing was written"
                         % (bin_path, rel["chip"].upper()))
    return got


def commands(esptool, port, bin_path, rel, baud):
    base = [esptool, "--chip", rel["chip"], "--port", port]
    return [base + ["erase-flash"],
            base + ["--baud", str(baud), "write-flash", rel["offset"], bin_path]]


def flash(port, bin_path=None, release=RELEASE, baud=460800, esptool=ESPTOOL, dry_run=False,
          log=print):
    rel = load_release(release)
    if not port:
        raise FlashError("no PORT given (e.g. make flash PORT=/dev/ttyUSB0)")
    bin_path = bin_path or os.path.join(os.path.dirname(os.path.abspath(release)), rel["file"])
    digest = verify(bin_path, rel)
    log("flash: %s verified (MicroPython %s, sha256 %s)" % (bin_path, rel["version"], digest))
    cmds = commands(esptool, port, bin_path, rel, baud)
    for cmd in cmds:
        log("flash: %s" % " ".join(shlex.quote(c) for c in cmd))
        if not dry_run:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise FlashError("esptool failed (exit %d). Hold BOOT while it connects, "
                                 "check the cable and PORT" % r.returncode)
    if dry_run:
        log("flash: dry run; esptool was not started")
    else:
        log("flash: done. Next: make deploy PORT=%s CONFIG=devices/<meter>.json" % port)
    return cmds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", default="")
    ap.add_argument("--bin", help="the downloaded .bin (default: esp32/<pinned file name>)")
    ap.add_argument("--release", default=RELEASE)
    ap.add_argument("--baud", type=int, default=460800)
    ap.add_argument("--esptool", default=ESPTOOL)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    try:
        flash(a.port, a.bin or None, a.release, a.baud, a.esptool, a.dry_run)
    except FlashError as e:
        print("flash: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
