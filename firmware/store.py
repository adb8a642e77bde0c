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
#
# A write the flash refuses (OSError: EIO from a worn or failing chip, ENOSPC from a full
# filesystem) is never a reason to reset: write() returns False, the record is kept in RAM
# (read() returns it, so this boot carries on as if it were saved) and flush() writes it again
# when the supervisor asks, at most once a minute, so a failing chip is never hammered. The
# first refusal of a spell is logged, and the first success after it; `errors` counts every
# refusal (the health message's flash_errors). A power cut while a record waits in RAM loses
# it: the flash still holds the previous one (README: when the flash fails).

import json
import os
from binascii import crc32

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: tools/deploy.py writes and reads the pulse index record with this code
    def const(value):
        return value

_DIR = const("state")
_ENOENT = const(2)
_EEXIST = const(17)
_ENOSPC = const(28)


class Store:
    def __init__(self, log, root="."):
        self._log = log
        self._dir = _DIR if root == "." else root + "/" + _DIR
        self.writes = 0  # flash writes since boot, for status and benchmarks
        self.errors = 0  # writes the flash refused since boot (health: flash_errors)
        # name -> record the flash refused (None: a refused remove). A name MicroPython has
        # interned anyway (firmware/backlog.py): main.py says why that counts.
        self._ram = {}

    def _path(self, name, ext=".json"):
        return "%s/%s%s" % (self._dir, name, ext)

    def read(self, name):
        """Return the stored object, or None when absent or unreadable."""
        if name in self._ram:
            return self._ram[name]  # newer than the flash, which refused it
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
        """Write a record atomically. False when the flash refused it: the record is then
        kept in RAM until flush() or a later write gets it onto flash. Never raises OSError."""
        body = json.dumps(obj).encode()
        tmp = self._path(name, ".tmp")
        try:
            try:
                os.mkdir(self._dir)
            except OSError as e:
                if e.args[0] != _EEXIST:
                    raise  # the flash refused the directory: say why, not ENOENT below
            # `with` closes the file: an unclosed file is empty after a reset (docs/unix-port.md
            # §3), and one left open after an error would hold LittleFS's buffers.
            with open(tmp, "wb") as f:
                f.write(body)
                f.write(b"\n%08x\n" % (crc32(body) & 0xFFFFFFFF))
            # power cut here: old record intact, stray .tmp replaced by the next write
            os.rename(tmp, self._path(name))
        except OSError as e:
            try:
                # A file over 128 bytes (credentials, the last error) takes a block of its own
                # (measured on the Unix port's LittleFS): a refused copy must not hold a full
                # filesystem's last one.
                os.remove(tmp)
            except OSError:
                pass
            return self._fail(e, name, obj)
        self.writes += 1
        if name in self._ram:  # what the flash refused is on it now
            del self._ram[name]
            if not self._ram:  # the end of the spell: the line _fail() began it with
                self._log.info("store", "flash writes work again (%d refused since boot)",
                               self.errors)
        return True

    def remove(self, name):
        """Remove a record. False when the flash refused it (it then reads as absent, and
        flush() tries again)."""
        try:
            os.remove(self._path(name))
            self.writes += 1
        except OSError as e:
            if e.args[0] != _ENOENT:  # else absent already: nothing to do
                return self._fail(e, name, None)
        if name in self._ram:  # what the flash refused is on it now
            del self._ram[name]
            if not self._ram:  # the end of the spell: the line _fail() began it with
                self._log.info("store", "flash writes work again (%d refused since boot)",
                               self.errors)
        return True

    def flush(self):
        """Write again what the flash refused, stopping at the first record it refuses again
        (one attempt per call on a dead chip). True when nothing waits."""
        for name in list(self._ram) if self._ram else ():
            obj = self._ram[name]
            if not (self.remove(name) if obj is None else self.write(name, obj)):
                return False
        return True

    def _fail(self, e, name, obj):
        # One line when the flash starts refusing (nothing waited in RAM yet); write() and
        # remove() log the end of the spell. MicroPython names only some error numbers: ENOSPC
        # would show as a bare 28. (_fail: a name firmware/link.py has interned already.)
        if not self._ram:
            self._log.error("store", "%s not saved (%s): kept in RAM, written again later",
                            self._path(name),
                            "[Errno 28] ENOSPC" if e.args[0] == _ENOSPC else e)
        self._ram[name] = obj
        self.errors += 1
        return False
