"""Fetch pinned MicroPython packages into lib/ with pip, checking both hashes.

micropython-umqtt.simple is published as an sdist without setup.py or pyproject.toml, so
`pip download` verifies the archive against the --hash in requirements-mpy.txt, unpacks it and
then fails to build metadata. --no-clean keeps the unpacked tree; we take the module from it
and check its own sha256 before it lands in lib/. No registry host is named anywhere: pip
resolves the package by name with the machine's own configuration.

Usage: python tools/fetch_mpy_lib.py requirements-mpy.txt lib
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# module path inside the sdist -> (destination under lib/, sha256 of the file)
_FILES = {
    "micropython-umqtt.simple": (
        "umqtt/simple.py",
        "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5",
    ),
}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(requirements, dest):
    dest = pathlib.Path(dest)
    with tempfile.TemporaryDirectory(prefix="mpylib-") as tmp:
        env = dict(os.environ, TMPDIR=tmp)
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-clean", "--no-deps",
            "--no-binary", ":all:", "--require-hashes", "-r", str(requirements),
            "-d", os.path.join(tmp, "dl"),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        if "DO NOT MATCH THE HASHES" in out:
            sys.exit("fetch_mpy_lib: archive hash mismatch\n" + out)
        for name, (relpath, digest) in _FILES.items():
            found = sorted(pathlib.Path(tmp).glob("pip-download-*/*/" + relpath))
            if not found:
                sys.exit("fetch_mpy_lib: %s not unpacked by pip:\n%s" % (name, out))
            got = _sha256(found[0])
            if got != digest:
                sys.exit("fetch_mpy_lib: %s: sha256 %s, expected %s" % (relpath, got, digest))
            target = dest / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], target)
            (target.parent / "__init__.py").touch()
            print("fetch_mpy_lib: %s -> %s (sha256 ok)" % (name, target))


if __name__ == "__main__":
    fetch(sys.argv[1], sys.argv[2])
