# The firmware's title and version, as ThingsBoard's OTA feature names them (current_fw_title,
# current_fw_version: docs/thingsboard.md §14.6). This file holds the development defaults that a
# plain checkout and the unit tests see. Every tree tools/build_device.py builds (the Unix-port
# tree, board trees, package.json for mip, the frozen manifest) carries a generated module in its
# place, stamped from `git describe` or, without git, the VERSION file at the top of the
# repository. OTA (issue 18) compares these two names with what the platform assigns.

TITLE = "meter-firmware"
VERSION = "dev"
