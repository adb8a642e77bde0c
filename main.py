# Meter firmware entry point, the same file on an ESP32 and on the MicroPython Unix port: the
# boot loader, the part of the firmware an update never replaces (with boot.py and bootslot.py).
# It mounts the flash, lets bootslot.py choose the firmware tree this boot runs (the deployed one
# or an OTA slot), times a new firmware's trial, then runs firmware/entry.py from that tree,
# which builds the meter and runs it under its last-chance handler.
#
# Why the split (OTA, issue 18): the code that judges an update must not be the update's own.
# What stays here decides and guards: the mount, the choice of tree, the trial's deadline, and
# the last-resort guard for a firmware that cannot even start (it fails at import, or while it
# is built), which bootslot.reboot() counts and, after a few, falls back from. Everything else
# is the firmware package's (firmware/entry.py onwards): compiled (.mpy), shipped in every OTA
# package, replaced by an update. So this file stays short and changes rarely: a change to it
# reaches only meters deployed again over USB (docs/deploy.md).
#
# Names: MicroPython interns names (identifiers, short strings, module names, and every
# one-character string made by iterating or indexing a str) for good, in a table of pools that
# double: past about 620 names the next pool is one block of about 7 KB (5 KB on ESP32), which
# a fragmented heap does not have, and whatever interns a name then fails with `memory
# allocation failed, allocating 640 bytes` (640: the entries). The firmware stays well below
# it, with every module it can load (tests/unix: the budget): private constants are const()
# (no name kept), strings are checked as bytes, and tracebacks name modules by their dotted
# name (tools/build_device.py), which is interned anyway. This file is compiled on the board at
# every boot, each name in it interned: the names here are ones the firmware interns anyway.

import sys

import micropython


def _hal():
    if sys.platform == "esp32":
        from firmware.hal.esp32 import Hal
    else:
        from firmware.hal.unix import Hal
    return Hal()


def _check(hal, ms):
    # A new firmware on trial (bootslot.py) has ms to reach the run state and get a PUBACK
    # (firmware/remote.py then drops "tries" from the record); if not, it is reset, and its
    # boots run out. Checked at each watchdog feed, by this file: not by the firmware on trial,
    # which may boot and never connect. Once, at the deadline: the link keeps this feed
    # (firmware/wiring.py), so after it the check costs one comparison.
    _feed, ms = hal.wdt_feed, hal.ticks_add(hal.ticks_ms(), ms)

    def wdt_feed():
        nonlocal ms
        if ms is not None and hal.ticks_diff(hal.ticks_ms(), ms) >= 0:
            ms = None
            try:
                with open("state/bootslot.json", "rb") as f:
                    tries = b'"tries"' in f.read(1024)
            except OSError:
                tries = False
            if tries:
                print("main: no PUBACK in the run state within the trial; resetting")
                hal.reset()
            hal.wdt_feed = _feed  # proved itself: the plain feed from now on
        _feed()

    hal.wdt_feed = wdt_feed


def main():
    try:
        try:
            micropython.alloc_emergency_exception_buf(100)  # tracebacks from interrupt handlers
        except AttributeError:
            pass  # not on the Unix port
        import gc

        hal = _hal()
        hal.mount()
        import bootslot
        # The firmware tree this boot runs, maybe an OTA slot (bootslot.py), with the slot's HAL
        # on a board; the Unix port keeps the HAL that mounted its simulated flash.
        hal, ms = bootslot.run(hal, _hal if sys.platform == "esp32" else None)
        del bootslot  # boot-only
        gc.collect()  # its garbage (a slot boot reads the record) before the firmware loads
        if ms:  # the trial's ms
            _check(hal, ms)
        # The firmware itself, from the tree chosen: it builds and runs the meter and never
        # returns (the board resets). What escapes it is for the guard below.
        from firmware import entry
        entry.run(hal)
    except Exception as e:  # the firmware could not even start: an update that fails at import
        import bootslot
        bootslot.reboot(e)  # does not return

main()
