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

# firmware/**.py, frozen as firmware.*; the same modules `make deploy` copies as .mpy files.
# firmware/hal/unix.py is never imported on a board; it is frozen too, so that a frozen image and
# a deployed board hold the same set of modules.
package("firmware", opt=2)
