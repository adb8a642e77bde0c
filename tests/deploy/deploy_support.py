"""Helpers for the deployment tests: the real Makefile targets and tools, a fake board on a
pseudo-terminal (lab/fakeboard.py) and, for the boot check, tbsim."""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware.cups import check_letters  # noqa: E402

PY = os.path.join(ROOT, ".venv", "bin", "python")
MPREMOTE = os.path.join(ROOT, ".venv", "bin", "mpremote")


def cups_for(n):
    digits = "0021%012d" % n
    return "ES" + digits + check_letters(digits) + "0F"


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def make(target, **variables):
    """Run a Makefile target as a technician would (no stdin)."""
    args = ["make", "--no-print-directory", "-s", target]
    args += ["%s=%s" % kv for kv in variables.items()]
    return run(args, timeout=180)


def meterconfig(*args):
    return run([PY, os.path.join(ROOT, "tools", "meterconfig.py")] + list(args))


class Board:
    """A running lab/fakeboard.py: .port for mpremote, .root is its filesystem."""

    def __init__(self, tmp_path, frozen=None):
        self.root = str(tmp_path / "board")
        os.makedirs(self.root, exist_ok=True)
        self.errlog = str(tmp_path / "fakeboard.log")
        cmd = [PY, os.path.join(ROOT, "lab", "fakeboard.py"), "--root", self.root,
               "--timeout", "300"]
        if frozen:
            cmd += ["--frozen", frozen]
        self._err = open(self.errlog, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        assert line.startswith("fakeboard: ready on "), line
        self.port = line.split()[-1]

    def events(self):
        with open(self.errlog) as f:
            return [l.strip() for l in f if l.startswith("fakeboard: ")]

    def files(self):
        out = {}
        for d, _dirs, files in os.walk(self.root):
            for f in files:
                p = os.path.join(d, f)
                out[os.path.relpath(p, self.root)] = p
        return out

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def wait_until(fn, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()
