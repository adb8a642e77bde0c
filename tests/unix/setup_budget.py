# Runs on the MicroPython Unix port against the device tree: loads what a boot into setup mode
# loads (firmware/entry.py and its modules, then firmware/setup_mode.py build() and a page with
# its form checked by the validator), renders the page, and prints the interned-name table and
# the heap.
# tests/unix/test_on_unix_port.py holds the figures against setup mode's budget.

import gc
import micropython

import firmware.entry  # noqa: F401  main.py runs it
import firmware.log
import firmware.store
import firmware.telemetry
import firmware.hal.unix  # noqa: F401
import firmware.startup  # noqa: F401  boot-only: loaded, then unloaded
from firmware import unload

unload("startup")
import firmware.setup_http  # noqa: F401  first, as setup_mode.build() does
import firmware.setup_mode
import firmware.setup_dns  # noqa: F401
import firmware.hal.unix_ap  # noqa: F401
import firmware.credentials  # noqa: F401
import firmware.config
import firmware.pulses  # noqa: F401
from firmware import wiring
from firmware.setup_page import render

firmware.config.validate({"wifi_ssid": "site wifi", "wifi_password": "x" * 20})
unload("config", "cups", "utf8")
gc.collect()
print("heap used %d" % gc.mem_alloc())
micropython.qstr_info()
