"""A failing flash for the CPython unit tests.

On the MicroPython Unix port the block device fails (firmware/hal/unix.py, METER_FLASH_*);
here the file operations fail instead: the open-for-writing, rename, remove and mkdir calls of
firmware/store.py and firmware/backlog_flash.py, the only modules that write, raise OSError as
the port's LittleFS does. Reads always work. The backlog's flash half stays imported while
faults are injected (the Backlog still drops and re-imports it as on the meter, but gets this
patched module back): unloading it would bring back the real os.

    faults = FlashFaults(monkeypatch)
    faults.clock = broker.now_ms             # what `refused` and `done` are timed with
    faults.fail(errno.EIO)                   # every write refused from now on
    faults.fail(errno.EIO, after=3)          # three more writes work, then every one is refused
    faults.fail(errno.EIO, match="creds")    # only writes whose path contains "creds"
    faults.fail(errno.EIO, times=1)          # the next one only
    faults.fail(errno.ENOSPC, ops=("rename",))  # only these operations (open, rename, remove,
                                             # mkdir): here the .tmp is written, not renamed
    faults.full(files=10)                    # ENOSPC: a file under state/ is not created when
                                             # 10 exist (each takes a block); removing frees one
    faults.heal()                            # writes work again

Every refused operation is recorded in `refused` as (op, path, errno, ms), every one that went
through in `done`, so a test can tell that a write site was exercised and at what pace.
"""

import builtins
import errno
import importlib
import os
import sys

import firmware
import firmware.backlog
import firmware.store

_REAL_OPEN = builtins.open


class _Os:
    # The os module as a failing flash shows it to the firmware.
    def __init__(self, faults):
        self._faults = faults

    def __getattr__(self, name):
        return getattr(os, name)

    def rename(self, a, b):
        self._faults.check("rename", a, new=False)
        os.rename(a, b)
        self._faults.went("rename", a)

    def remove(self, path):
        if os.path.exists(path):  # ENOENT is the real answer for an absent file, fault or not
            self._faults.check("remove", path, new=False, frees=True)
        os.remove(path)
        self._faults.went("remove", path)

    def mkdir(self, path):
        if not os.path.exists(path):
            self._faults.check("mkdir", path, new=False)
        os.mkdir(path)


class FlashFaults:
    def __init__(self, monkeypatch):
        self.clock = lambda: 0
        self.errno = None
        self.after = 0
        self.match = None
        self.times = None
        self.ops = None
        self.files = None  # full(): files allowed under state/
        self.refused = []
        self.done = []
        proxy = _Os(self)
        flash = importlib.import_module("firmware.backlog_flash")
        for mod in (firmware.store, flash):
            monkeypatch.setattr(mod, "os", proxy)
            monkeypatch.setattr(mod, "open", self._open, raising=False)
        monkeypatch.setitem(sys.modules, "firmware.backlog_flash", flash)
        monkeypatch.setattr(firmware, "backlog_flash", flash, raising=False)
        monkeypatch.setattr(firmware.backlog, "unload", lambda *names: None)

    # --- what the test says -------------------------------------------------------------------
    def fail(self, err, after=0, match=None, times=None, ops=None):
        self.errno, self.after, self.match, self.times, self.files = err, after, match, times, None
        self.ops = ops

    def full(self, files):
        self.errno, self.after, self.match, self.times, self.files = None, 0, None, None, files

    def heal(self):
        self.errno = self.files = None

    def count(self, op=None, match="", refused=True):
        return len([r for r in (self.refused if refused else self.done)
                    if (op is None or r[0] == op) and match in r[1]])

    # --- what the firmware meets ----------------------------------------------------------------
    def _open(self, path, mode="r", *args, **kw):
        writing = any(c in mode for c in "wax+")
        if writing:
            self.check("open", path, new=not os.path.exists(path))
        f = _REAL_OPEN(path, mode, *args, **kw)
        if writing:
            self.went("open", path)
        return f

    def check(self, op, path, new, frees=False):
        path = str(path)
        if self.files is not None:
            if new and not frees and _files_under("state") >= self.files:
                self._refuse(op, path, errno.ENOSPC)
            return
        if self.errno is None or (self.match and self.match not in path) or (
                self.ops and op not in self.ops):
            return
        if self.after > 0:
            self.after -= 1
            return
        if self.times is not None:
            if self.times <= 0:
                return
            self.times -= 1
        self._refuse(op, path, self.errno)

    def _refuse(self, op, path, err):
        self.refused.append((op, path, err, self.clock()))
        raise OSError(err, os.strerror(err), path)

    def went(self, op, path):
        self.done.append((op, str(path), 0, self.clock()))


def _files_under(top):
    n = 0
    for _dir, _dirs, names in os.walk(top):
        n += len(names)
    return n
