# Flash faults for the Unix port's simulated flash (firmware/hal/unix.py lists them in its
# header). Imported only to arm them when the flash is mounted and to fill the flash, so this
# test-only code stays out of the heap the meter runs in, unless an EIO is armed (the wrapped
# block device keeps its closure).

import os
import time

from micropython import const

_EIO = const(-5)  # a negative errno: LittleFS hands it up as OSError(EIO)
_PIECE = const(256)


def mount(hal, dev):
    """Arm the faults the environment asks for, on a block device LittleFS has not bound yet
    (so a blank image under EIO cannot be formatted either: the tests give the meter an image
    with its config). True when the flash is to be full from boot."""
    env = os.getenv
    now = time.ticks_ms()  # uptime counts from here, as the meter's does
    after, since, until = (env("METER_FLASH_EIO_AFTER"), env("METER_FLASH_EIO_FROM_MS"),
                           env("METER_FLASH_EIO_UNTIL_MS"))
    if after or since:
        after = int(after) if after else None
        since = time.ticks_add(now, int(since)) if since else None
        until = time.ticks_add(now, int(until)) if until else None
        write = dev.writeblocks
        done = [0]  # block programs so far

        def writeblocks(n, buf, off=0):
            t = time.ticks_ms()
            if (after is not None and done[0] >= after) or (
                    since is not None and time.ticks_diff(t, since) >= 0 and
                    (until is None or time.ticks_diff(t, until) < 0)):
                return _EIO
            done[0] += 1
            return write(n, buf, off)

        dev.writeblocks = writeblocks  # an instance attribute: what VfsLfs2 binds
    full = int(env("METER_FLASH_FULL_FROM_MS") or -1)
    if full > 0:
        hal.full = time.ticks_add(now, full)  # Hal.wdt_feed calls fill() then
    return full == 0


def fill(hal):
    """Other files take every free block, one each (2 KB: not inline in a directory), until
    LittleFS refuses one, as other data filling the flash would. They stay."""
    hal.full = None
    zeros = bytes(_PIECE)
    k = 0
    try:
        while True:
            k += 1
            with open("/flash/ballast%d.bin" % k, "wb") as f:
                for _ in range(2048 // _PIECE):
                    f.write(zeros)
    except OSError:
        print("hal: flash full (METER_FLASH_FULL_FROM_MS)")
