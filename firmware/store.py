# Persistent state on flash: small JSON records, each in its own file, written atomically.
#
# Power can fail at any instant. A record is written to "<name>.tmp", closed, then renamed over
# "<name>.json": LittleFS (ESP32 default, and the Unix port's simulated flash) makes the rename
# atomic, so a reader sees either the old record or the new one, never a mix. A cut before the
# rename leaves a stray .tmp that the next write replaces.
#
# Each file is "<json>\n<crc32 hex>\n". A missing, empty, truncated or corrupt file (bit rot, a
# write from older firmware, a hand edit gone wrong) fails the CRC or the parse and reads as
# absent: the caller falls back to its default, never crashes.

import json
import os
from binascii import crc32

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: tools/deploy.py writes and reads the pulse index record with this code
    def const(value):
        return value

_DIR = const("state")


class Store:
    def __init__(self, log, root="."):
        self._log = log
        self._dir = _DIR if root == "." else root + "/" + _DIR
        self.writes = 0  # flash writes since boot, for status and benchmarks

    def _path(self, name, ext=".json"):
        return "%s/%s%s" % (self._dir, name, ext)

    def read(self, name):
        """Return the stored object, or None when absent or unreadable."""
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None  # absent: the normal first-boot case
        why = None
        nl = data.rfind(b"\n", 0, len(data) - 1)
        if not data:
            why = "empty"
        elif nl < 0 or data[-1:] != b"\n":
            why = "truncated"
        else:
            body = data[:nl]
            try:
                if int(data[nl + 1:-1], 16) != crc32(body) & 0xFFFFFFFF:
                    why = "checksum mismatch"
                else:
                    return json.loads(body)
            except ValueError:
                why = "unreadable"
        self._log.warn("store", "%s is %s; treated as absent", path, why)
        return None

    def write(self, name, obj):
        body = json.dumps(obj).encode()
        try:
            os.mkdir(self._dir)
        except OSError:
            pass  # exists
        tmp = self._path(name, ".tmp")
        # `with` closes the file: an unclosed file is empty after a reset (docs/unix-port.md §3).
        with open(tmp, "wb") as f:
            f.write(body)
            f.write(b"\n%08x\n" % (crc32(body) & 0xFFFFFFFF))
        # power cut here: old record intact, stray .tmp replaced by the next write
        os.rename(tmp, self._path(name))
        self.writes += 1

    def remove(self, name):
        try:
            os.remove(self._path(name))
            self.writes += 1
        except OSError:
            pass
