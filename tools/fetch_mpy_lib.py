"""Fetch pinned MicroPython packages into lib/ with pip, checking both hashes.

Two kinds of archive, each pinned by its sha256 in requirements-mpy.txt (--require-hashes):
- micropython-umqtt.simple is published as an sdist without setup.py or pyproject.toml, so
  `pip download` verifies the archive, unpacks it and then fails to build metadata. --no-clean
  keeps the unpacked tree; we take the module from it.
- microdot (the setup page's web server, firmware/setup_http.py) is taken from its wheel, which
  pip downloads and verifies without building anything; we take the two files of the core
  server (microdot/__init__.py, microdot/microdot.py) out of the zip. Its extensions are not
  used and not copied.
Every file taken is checked against its own sha256 below before it lands in lib/. No registry
host is named anywhere: pip resolves the packages by name with the machine's own configuration.

Usage: python tools/fetch_mpy_lib.py requirements-mpy.txt lib
"""

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

# package -> (how it comes, [(path inside the archive, destination under lib/, sha256)])
_FILES = {
    "micropython-umqtt.simple": ("sdist", [
        ("umqtt/simple.py", "umqtt/simple.py",
         "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"),
    ]),
    "microdot": ("wheel", [
        ("microdot/__init__.py", "microdot/__init__.py",
         "d2bc801e842a2b4e3e5a82e26c82f5cce65f1edbca27e9c1df1ac5828ebb50eb"),
        ("microdot/microdot.py", "microdot/microdot.py",
         "d9e0bea681d15965e8c683f642e03536fbed34e0bc55fe5000324208924936c1"),
    ]),
}


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _from_sdist(tmp, name, inner, out):
    found = sorted(pathlib.Path(tmp).glob("pip-download-*/*/" + inner))
    if not found:
        sys.exit("fetch_mpy_lib: %s not unpacked by pip:\n%s" % (name, out))
    return found[0].read_bytes()


def _from_wheel(tmp, name, inner, out):
    wheels = sorted(pathlib.Path(tmp, "dl").glob(name.replace("-", "_") + "-*.whl"))
    if not wheels:
        sys.exit("fetch_mpy_lib: no wheel of %s downloaded:\n%s" % (name, out))
    with zipfile.ZipFile(wheels[0]) as z:
        try:
            return z.read(inner)
        except KeyError:
            sys.exit("fetch_mpy_lib: %s has no %s" % (wheels[0].name, inner))


def _pins(requirements):
    """package name -> its line in requirements-mpy.txt (pin and hash)."""
    pins = {}
    for line in pathlib.Path(requirements).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins[re.split(r"[=<>!~ ;\[]", line, 1)[0].lower()] = line
    return pins


def _download(tmp, lines, binary):
    # One pip run per kind: pip gives up on the umqtt sdist once it has checked and unpacked it
    # (no metadata to build), before it would get to anything else.
    req = os.path.join(tmp, "req-%s.txt" % binary)
    with open(req, "w") as f:
        f.write("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-clean", "--no-deps",
           "--only-binary" if binary == "wheel" else "--no-binary", ":all:",
           "--require-hashes", "-r", req, "-d", os.path.join(tmp, "dl")]
    proc = subprocess.run(cmd, env=dict(os.environ, TMPDIR=tmp), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if "DO NOT MATCH THE HASHES" in out:
        sys.exit("fetch_mpy_lib: archive hash mismatch\n" + out)
    return out


def fetch(requirements, dest):
    dest = pathlib.Path(dest)
    pins = _pins(requirements)
    missing = [n for n in _FILES if n.lower() not in pins]
    if missing:
        sys.exit("fetch_mpy_lib: %s: no pin for %s" % (requirements, ", ".join(missing)))
    with tempfile.TemporaryDirectory(prefix="mpylib-") as tmp:
        outs = {}
        for kind in ("sdist", "wheel"):
            lines = [pins[n.lower()] for n, (k, _f) in _FILES.items() if k == kind]
            outs[kind] = _download(tmp, lines, kind) if lines else ""
        for name, (kind, files) in _FILES.items():
            take = _from_sdist if kind == "sdist" else _from_wheel
            for inner, relpath, digest in files:
                data = take(tmp, name, inner, outs[kind])
                got = _sha256(data)
                if got != digest:
                    sys.exit("fetch_mpy_lib: %s: sha256 %s, expected %s" % (relpath, got, digest))
                target = dest / relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                init = target.parent / "__init__.py"
                if not init.exists():
                    init.touch()
                print("fetch_mpy_lib: %s -> %s (sha256 ok)" % (name, target))


if __name__ == "__main__":
    fetch(sys.argv[1], sys.argv[2])
