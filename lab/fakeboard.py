"""A fake ESP32 on a pseudo-terminal: MicroPython's REPL and raw REPL, backed by the Unix port.

    python lab/fakeboard.py --root DIR [--link PATH] [--frozen DIR] [--timeout S]

Prints "fakeboard: ready on /dev/pts/N" and serves until killed (or --timeout). Point mpremote
(or `make deploy PORT=...`) at that device, as at a board's USB serial port.

What it plays, and how:
- The board's filesystem is DIR: the interpreter runs with DIR as its working directory
  (VfsPosix), and sys.path is ['', '.frozen', 'lib', ...] as on an ESP32 (['', '.frozen', '/lib']).
- --frozen DIR stands for modules frozen into the firmware image (e.g. umqtt): importable,
  but not files on the board's filesystem.
- Soft reset. The Unix port treats Ctrl-D as end of input and exits, so Ctrl-D on an empty
  raw-REPL line (or in the friendly REPL) is caught here: the interpreter is replaced by a
  fresh one (a fresh heap, as after a soft reset), the board prints "OK\\r\\nMPY: soft
  reboot\\r\\n" and, in raw mode, re-enters the raw REPL, as pyexec.c does on a board.
- Hard reset. machine.reset() (added to the Unix port's machine module by a shim) ends the
  interpreter; a new one starts in the friendly REPL, as after a reset. Any other exit
  (sys.exit, a crash) is a soft reboot.
- The serial line is raw both ways, like a USB-serial bridge; program output gets "\\r\\n" line
  ends as a board's stdout gives them.

Not played: boot ROM output, main.py running at power-up (the firmware's boot is tested by
running it on the Unix port directly, see tests/deploy), baud rates, DTR/RTS.
"""

import argparse
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
import tty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
HARD_RESET_EXIT = 77

# Extends the Unix port's built-in machine module (a .py on the path shadows an extensible
# built-in; with sys.path emptied, the import inside finds the built-in one).
_MACHINE_SHIM = """import sys
_saved = sys.path
sys.path = []
from machine import *
sys.path = _saved
del _saved


def reset():
    sys.exit(%d)


def unique_id():
    return b"\\xfa\\x4e\\xb0\\xa2\\xd0\\x01"
""" % HARD_RESET_EXIT


class FakeBoard:
    def __init__(self, root, frozen=None, heap="116K", micropython=MICROPYTHON):
        self.root = os.path.abspath(root)
        self.frozen = os.path.abspath(frozen) if frozen else None
        self.heap = heap
        self.micropython = micropython
        self._rom = tempfile.mkdtemp(prefix="fakeboard-rom-")
        with open(os.path.join(self._rom, "machine.py"), "w") as f:
            f.write(_MACHINE_SHIM)
        # The host's end: mpremote opens the slave's path. Both ends stay open here, so the
        # line survives mpremote connecting and disconnecting many times.
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.proc = None
        self._cm = None
        self.raw = False  # the host put the REPL in raw mode
        self._last = 0  # last byte sent to the host, for the CR/LF cooking
        self._line_empty = True  # nothing typed on the current raw-REPL line
        self.boots = 0
        self.soft_resets = 0
        self.hard_resets = 0

    # --- the interpreter -------------------------------------------------------------------
    def _env(self):
        path = [".frozen"] + ([self.frozen] if self.frozen else []) + ["lib", self._rom]
        env = dict(os.environ, MICROPYPATH=":".join(path))
        env.pop("METER_FLASH", None)
        return env

    def _spawn(self):
        cm, cs = pty.openpty()
        tty.setraw(cs)  # otherwise the pty turns "\n" into "\r\r\n" and mpremote loses step
        self.proc = subprocess.Popen([self.micropython, "-X", "heapsize=" + self.heap],
                                     stdin=cs, stdout=cs, stderr=cs, cwd=self.root,
                                     env=self._env(), start_new_session=True)
        os.close(cs)
        self._cm = cm
        self.boots += 1

    def _kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
        if self._cm is not None:
            os.close(self._cm)
        self.proc = None
        self._cm = None

    def _read_child_until(self, marker, timeout=10.0):
        buf = b""
        end = time.monotonic() + timeout
        while marker not in buf:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError("fakeboard: interpreter did not print %r" % marker)
            r, _, _ = select.select([self._cm], [], [], left)
            if r:
                try:
                    chunk = os.read(self._cm, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise RuntimeError("fakeboard: interpreter exited during boot")
                buf += chunk
        return buf

    def boot(self, raw):
        """Start a fresh interpreter; in raw mode, hand the host a raw REPL as a board does."""
        self._spawn()
        self._line_empty = True
        self.raw = raw
        if raw:
            self._read_child_until(b">>> ")  # the banner a board does not print in raw mode
            os.write(self._cm, b"\x01")  # its "raw REPL; CTRL-B to exit\r\n>" goes to the host

    def _note(self, what):
        # Events for whoever watches the fake board (tests read them from its stderr).
        print("fakeboard: %s" % what, file=sys.stderr, flush=True)

    def soft_reset(self, ok=True):
        self.soft_resets += 1
        self._note("soft reset")
        self._kill()
        self._send((b"OK" if ok else b"") + b"\r\nMPY: soft reboot\r\n")
        self.boot(self.raw)

    def hard_reset(self):
        self.hard_resets += 1
        self._note("hard reset")
        self._kill()
        self.boot(False)

    # --- the serial line ---------------------------------------------------------------------
    def _cook(self, data):
        # A board's stdout turns "\n" into "\r\n" (mp_hal_stdout_tx_strn_cooked); the Unix
        # port writes program output as it is.
        out = bytearray()
        for b in data:
            if b == 10 and self._last != 13:
                out += b"\r"
            out.append(b)
            self._last = b
        return bytes(out)

    def _send(self, data):
        while data:
            n = os.write(self.master, data)
            data = data[n:]

    def _from_host(self, data):
        out = bytearray()
        for b in data:
            c = bytes((b,))
            if c == b"\x04" and (not self.raw or self._line_empty):
                # Soft reset: flush what came before, then reboot.
                if out:
                    os.write(self._cm, bytes(out))
                    out.clear()
                self.soft_reset(ok=self.raw)
                continue
            if c == b"\x01":
                self.raw = True
                self._line_empty = True
            elif c == b"\x02":
                self.raw = False
            elif c in (b"\x03", b"\x04"):
                self._line_empty = True
            elif self.raw:
                self._line_empty = False
            out += c
        if out:
            os.write(self._cm, bytes(out))

    def serve(self, timeout=None):
        self.boot(False)
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while end is None or time.monotonic() < end:
                r, _, _ = select.select([self.master, self._cm], [], [], 0.2)
                if self._cm in r:
                    try:
                        chunk = os.read(self._cm, 4096)
                    except OSError:  # EIO: the interpreter is gone
                        chunk = b""
                    if chunk:
                        self._send(self._cook(chunk))
                    else:
                        self.proc.wait()
                        if self.proc.returncode == HARD_RESET_EXIT:
                            self.hard_reset()
                        else:
                            self.soft_reset(ok=False)
                        continue
                if self.master in r:
                    data = os.read(self.master, 4096)
                    if data:
                        self._from_host(data)
        finally:
            self._kill()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="directory that plays the board's flash")
    ap.add_argument("--link", help="also make this symlink to the pty")
    ap.add_argument("--frozen", help="directory of modules frozen into the fake firmware")
    ap.add_argument("--heap", default="116K")
    ap.add_argument("--timeout", type=float, help="exit after this many seconds")
    a = ap.parse_args(argv)
    os.makedirs(a.root, exist_ok=True)
    board = FakeBoard(a.root, a.frozen, a.heap)
    if a.link:
        if os.path.lexists(a.link):
            os.unlink(a.link)
        os.symlink(board.port, a.link)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("fakeboard: ready on %s" % board.port, flush=True)
    try:
        board.serve(a.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        if a.link and os.path.islink(a.link):
            os.unlink(a.link)


if __name__ == "__main__":
    main()
