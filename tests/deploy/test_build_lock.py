"""One build of a device tree at a time, and none while a deploy copies it.

`make build` (a board tree, without the Unix port's HAL) and `make deploy` (every file; the
board's platform picks) share build/device-<march>: run side by side, the build removed files
the deploy was about to copy (tools/build_device.py tree_lock())."""

import os
import subprocess
import sys

from tools import build_device

_TRY = ("import fcntl, sys\n"
        "f = open(sys.argv[1], 'a')\n"
        "try:\n"
        "    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    sys.exit(3)\n")


def _other_process_may_build(tree):
    r = subprocess.run([sys.executable, "-c", _TRY, str(tree) + ".lock"])
    assert r.returncode in (0, 3), r
    return r.returncode == 0


def test_a_tree_held_by_a_build_or_deploy_is_not_built_by_another_process(tmp_path):
    tree = tmp_path / "device"
    assert _other_process_may_build(tree)
    with build_device.tree_lock(str(tree)):
        assert not _other_process_may_build(tree)
        # The holder itself builds it (a deploy builds inside its own hold): no self-deadlock.
        assert build_device.build(str(tree)) > 0
        assert os.path.exists(tree / "main.py") and os.path.exists(tree / "firmware" / "log.mpy")
        assert not _other_process_may_build(tree)  # the inner build's hold ended, not the outer
        assert not [f for _d, _s, fs in os.walk(tree) for f in fs if f.endswith(".tmp")]
    assert _other_process_may_build(tree)
