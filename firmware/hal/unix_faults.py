# Flash faults for the Unix port's simulated flash (firmware/hal/unix.py lists them in its
# header). Imported only while setting them up at mount time and while filling the flash, so
# this test-only code never stays in the heap the meter runs in.

import os
import time

from micropython import const

_PIECE = const(256)


def mount(hal, dev):
    """Arm the faults the environment asks for on the block device dev just mounted."""
    env = os.getenv
    now = time.ticks_ms()  # uptime counts from here, as the meter's does
    after, since, until = (env("METER_FLASH_EIO_AFTER"), env("METER_FLASH_EIO_FROM_MS"),
                           env("METER_FLASH_EIO_UNTIL_MS"))
    if after or since:
        # [block programs before EIO, EIO from, EIO until] as ticks_ms (FileBlockDev.writeblocks)
        dev._fault_at = [int(after) if after else None,
                         time.ticks_add(now, int(since)) if since else None,
                         time.ticks_add(now, int(until)) if until else None]
    full = env("METER_FLASH_FULL_FROM_MS")
    if full:
        if int(full):
            hal.full = time.ticks_add(now, int(full))  # Hal.wdt_feed calls fill() then
        else:
            fill()


def fill():
    """Other files take every free block, one each (2 KB: not inline in a directory), until
    LittleFS refuses one, as other data filling the flash would. They stay."""
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
