"""The firmware's title and version: stamped by tools/build_device.py into every tree it builds
(git describe, or the VERSION file without git), never into the source tree."""

import os
import shutil
import subprocess

import pytest

from deploy_support import ROOT, run
from lab.meterhost import MICROPYTHON
from tools import build_device

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed on this machine")


def checkout(tmp_path, version_file="1.4.0\n"):
    """A copy of what the stamp reads: firmware/version.py and VERSION."""
    root = tmp_path / "src"
    (root / "firmware").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "firmware", "version.py"), root / "firmware" / "version.py")
    if version_file is not None:
        (root / "VERSION").write_text(version_file)
    return str(root)


def git(root, *args):
    r = subprocess.run([GIT, "-C", root, "-c", "user.name=t", "-c", "user.email=t@example.org",
                        "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"] + list(args),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_without_git_the_version_file_names_the_version(tmp_path):
    root = checkout(tmp_path)
    assert build_device.firmware_version(root, git="/nonexistent/git") == (
        "meter-firmware", "1.4.0", "VERSION")


@needs_git
def test_in_a_git_checkout_the_version_is_git_describe(tmp_path):
    root = checkout(tmp_path)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    commit = git(root, "rev-parse", "--short", "HEAD")
    # No tag yet: the release line from VERSION, then the commit.
    assert build_device.firmware_version(root)[1:] == ("1.4.0-g" + commit, "VERSION + git describe")
    with open(os.path.join(root, "firmware", "version.py"), "a") as f:
        f.write("# an edit not committed\n")
    assert build_device.firmware_version(root)[1] == "1.4.0-g%s-dirty" % commit
    git(root, "commit", "-qam", "second")
    git(root, "tag", "-a", "v1.4.1", "-m", "release")
    assert build_device.firmware_version(root) == ("meter-firmware", "v1.4.1", "git describe")


@needs_git
def test_a_tree_exported_inside_another_repository_is_not_described_by_it(tmp_path):
    outer = str(tmp_path)
    git(outer, "init", "-q")
    root = checkout(tmp_path)
    assert build_device.firmware_version(root)[1:] == ("1.4.0", "VERSION")


def test_no_git_and_no_version_file_or_a_bad_version_stops_the_build(tmp_path):
    root = checkout(tmp_path, version_file=None)
    with pytest.raises(build_device.VersionError, match="no git checkout and no VERSION file"):
        build_device.firmware_version(root, git="/nonexistent/git")
    for bad in ("1.0 beta\n", '1.0"\n', "-rc1\n", "\n", "x" * 65):
        with open(os.path.join(root, "VERSION"), "w") as f:
            f.write(bad)
        with pytest.raises(build_device.VersionError, match="firmware version"):
            build_device.firmware_version(root, git="/nonexistent/git")


def _tree_version(tree):
    env = dict(os.environ, MICROPYPATH=tree)
    r = subprocess.run([MICROPYTHON, "-c", "from firmware import version as v; print(v.TITLE, v.VERSION)"],
                       env=env, capture_output=True, text=True, timeout=30, cwd=tree)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_every_tree_carries_the_stamped_version_and_the_source_keeps_its_default(tmp_path):
    title, version, _source = build_device.firmware_version()
    assert version != "dev"
    unix, esp32 = str(tmp_path / "unix"), str(tmp_path / "esp32")
    build_device.build(unix)
    r = run([os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "tools", "build_device.py"),
             esp32, "--march", "xtensawin", "--board"])
    assert r.returncode == 0, r.stderr
    assert "firmware %s %s" % (title, version) in r.stdout
    assert _tree_version(unix) == [title, version]
    assert _tree_version(esp32) == [title, version]
    # The checkout's own module is the development default the unit tests import...
    from firmware import version as source
    assert (source.TITLE, source.VERSION) == ("meter-firmware", "dev")
    # ...and the generated one lives under build/, which git ignores.
    gen = os.path.relpath(os.path.join(build_device.GEN_DIR, "firmware", "version.py"), ROOT)
    if GIT is not None:
        r = subprocess.run([GIT, "-C", ROOT, "check-ignore", "-q", gen])
        assert r.returncode == 0, "%s is not git-ignored" % gen


def test_a_new_version_recompiles_only_the_version_module(tmp_path, monkeypatch):
    tree = str(tmp_path / "tree")
    build_device.build(tree)
    assert build_device.build(tree) == 0  # nothing changed
    monkeypatch.setattr(build_device, "firmware_version",
                        lambda root=ROOT, git="git": ("meter-firmware", "9.9.9", "test"))
    monkeypatch.setattr(build_device, "GEN_DIR", str(tmp_path / "gen"))
    assert build_device.build(tree) == 1
    assert _tree_version(tree) == ["meter-firmware", "9.9.9"]
