# Frozen manifest: a MicroPython ESP32 image with the meter firmware built in (docs/deploy.md).
#
#   cd micropython/ports/esp32          # a checkout of the pinned release tag (esp32/release.json)
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this checkout>/manifest.py
#
# Flash that image (make flash FIRMWARE_BIN=... RELEASE=<a release.json with its sha256>), then
# copy only main.py, boot.py and the meter's config: make deploy ... FROZEN=1.
# Frozen bytecode runs from flash, so the firmware's code no longer takes heap when imported.

# The port's own frozen modules, which include umqtt.simple and ntptime (the firmware uses both).
include("$(PORT_DIR)/boards/manifest.py")

# firmware/**.py, frozen as firmware.*: the same modules `make deploy` copies as .mpy files to
# an ESP32, which leaves out the Unix port's HAL (a board simulator, tools/build_device.py
# UNIX_ONLY). manifestfile.py runs this file from its own folder, so the walk is relative.
import os
import subprocess
import sys

_files = []
for _dir, _subdirs, _names in os.walk("firmware"):
    for _name in _names:
        _path = os.path.join(_dir, _name)[len("firmware/"):]
        if _name.endswith(".py") and _path not in ("hal/unix.py", "hal/unixrtc.py", "hal/unix_ap.py",
                                                    "hal/unix_faults.py", "version.py"):
            _files.append(_path)
package("firmware", files=sorted(_files), opt=2)

# firmware/version.py is the development default ("dev"): the image gets the version module
# stamped now, from this checkout (git describe or VERSION, tools/build_device.py), so an image
# built after a `git pull` never carries the version of an older build.
subprocess.run([sys.executable, "tools/build_device.py", "--version-module",
                "build/gen/firmware/version.py"], check=True)
module("firmware/version.py", base_path="build/gen", opt=2)

# microdot, the setup page's web server (firmware/setup_http.py), from lib/ (make lib fetches it,
# pinned by hash): frozen, it costs about 4 KB of heap in setup mode instead of 19 KB.
if os.path.exists("lib/microdot/microdot.py"):
    package("microdot", files=["__init__.py", "microdot.py"], base_path="lib", opt=2)
