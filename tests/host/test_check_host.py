"""tools/check_host.sh, the Makefile's first step on a new machine, against fake machines: a PATH
holding only fake tools (a python3 that is too old, one without ensurepip as Debian's is without
python3-venv, none at all). Each must get one line naming what to install, and `make` must stop
on it before creating .venv/ or calling pip."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "check_host.sh")
SH = "/bin/sh"


def fake_bin(tmp_path, python=None, make=True, extra=()):
    """A bin folder with the tools a bare system has (sh, id, the coreutils used) and fakes."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "id", "cat", "env", "rm", "mkdir", "touch", "test") + tuple(extra):
        for d in ("/usr/bin", "/bin"):
            if os.path.exists(os.path.join(d, tool)):
                os.symlink(os.path.join(d, tool), bindir / tool)
                break
    if make:
        os.symlink(subprocess.check_output(["sh", "-c", "command -v make"], text=True).strip(),
                   bindir / "make")
    if python is not None:
        (bindir / "python3").write_text("#!/bin/sh\n" + python)
        (bindir / "python3").chmod(0o755)
    return str(bindir)


def check(bindir, *args):
    return subprocess.run([SH, SCRIPT] + list(args), capture_output=True, text=True, timeout=30,
                          env={"PATH": bindir, "HOME": "/nonexistent"})


# A python3 that runs the real interpreter, with the module `ensurepip` hidden (Debian's
# python3 without python3-venv) or with another version reported.
REAL = sys.executable
NO_ENSUREPIP = ('case "$*" in *ensurepip*) echo "ModuleNotFoundError: No module named '
                "'ensurepip'\" >&2; exit 1;; esac\nexec %s \"$@\"\n" % REAL)
OLD = ('case "$*" in *version_info*\\<*) exit 1;; *version_info*) echo 3.10; exit 0;; esac\n'
       'exec %s "$@"\n' % REAL)
GOOD = 'exec %s "$@"\n' % REAL


def test_a_complete_machine_passes_silently(tmp_path):
    bindir = fake_bin(tmp_path, GOOD)
    r = check(bindir)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    r = check(bindir, "--list")
    assert r.returncode == 0 and r.stdout == ""


def test_no_python_at_all_names_python3_and_python3_venv(tmp_path):
    r = check(fake_bin(tmp_path))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr  # one line
    assert "missing system packages: python3 python3-venv" in r.stderr
    assert "apt-get install python3 python3-venv" in r.stderr


def test_python_without_ensurepip_is_python3_venv_missing(tmp_path):
    r = check(fake_bin(tmp_path, NO_ENSUREPIP))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "missing system packages: python3-venv (" in r.stderr


def test_no_make_is_named_too(tmp_path):
    r = check(fake_bin(tmp_path, NO_ENSUREPIP, make=False))
    assert "missing system packages: make python3-venv" in r.stderr


def test_a_python_older_than_3_11_is_refused_by_version(tmp_path):
    r = check(fake_bin(tmp_path, OLD))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "python3 is Python 3.10; the pinned packages need 3.11 or newer" in r.stderr


def test_list_mode_prints_only_package_names_for_ci(tmp_path):
    r = check(fake_bin(tmp_path), "--list")
    assert r.returncode == 0 and r.stdout == "python3 python3-venv\n"


def test_an_explicit_interpreter_is_checked_not_python3(tmp_path):
    bindir = fake_bin(tmp_path, GOOD)
    r = check(bindir, "python3.99")
    assert r.returncode == 1 and "missing system packages: python3 python3-venv" in r.stderr


def test_make_sim_on_a_machine_without_python3_venv_says_so_in_one_line(tmp_path):
    # The Makefile's own set-up rule, with a .venv/ that does not exist yet: the check runs
    # first and make stops there, before venv or pip could print a traceback.
    bindir = fake_bin(tmp_path, NO_ENSUREPIP)
    venv = tmp_path / "venv"
    r = subprocess.run(["make", "--no-print-directory", "-s", "-C", ROOT, "VENV=%s" % venv,
                        "PYTHON=python3", "sim"], capture_output=True, text=True, timeout=60,
                       env={"PATH": bindir, "HOME": str(tmp_path)})
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if not l.startswith("make")]
    assert lines == ["set-up: missing system packages: python3-venv (Debian/Ubuntu: %sapt-get "
                     "install python3-venv), then run make again" % (
                         "" if os.getuid() == 0 else "sudo ")], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not venv.exists()


def test_make_test_also_needs_chromium_for_the_setup_page_test(tmp_path):
    bindir = fake_bin(tmp_path, GOOD)
    assert check(bindir, "--list").stdout == ""  # make sim does not need it
    r = check(bindir, "--list", "--test")
    assert r.returncode == 0 and r.stdout == "chromium\n"
    r = check(bindir, "--test")
    assert r.returncode == 1 and "missing system packages: chromium (" in r.stderr
    (tmp_path / "bin" / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "chromium").chmod(0o755)
    assert check(bindir, "--test", "--list").stdout == ""
