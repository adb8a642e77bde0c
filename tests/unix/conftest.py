import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")


@pytest.fixture
def upy(tmp_path):
    """Run a script on the MicroPython Unix port with the firmware sources on the path."""

    def run(script, *args, paths=(), heap="110K", env=None, timeout=120):
        e = dict(os.environ, MICROPYPATH=":".join([ROOT] + [os.path.join(ROOT, p) for p in paths]
                                                  + [".frozen"]), PORTABLE_TMP=str(tmp_path))
        e.update(env or {})
        return subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, script] + list(args),
                              cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)

    return run
