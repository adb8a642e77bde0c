# Meter firmware entry point, the same file on an ESP32 and on the MicroPython Unix port.
# Builds every object (the logic modules do nothing at import time and receive what they
# need), then runs the meter. It never dies: anything that escapes is logged, the pulse index
# is saved, and the board resets after a pause that grows with repeated crashes, so a crash
# loop can neither wear the flash nor hammer the server. Kept short: main.py is compiled on
# the board at every boot, the firmware package comes compiled (.mpy).

import sys

import micropython
from micropython import const

_GC_EVERY = const(16384)  # bytes allocated between automatic collections
_CONSOLE_WDT_MS = const(3600000)


def build(hal, log, store, payload):
    # Boot-only work first (reading and checking the config, the TLS context), then the
    # meter's code is loaded into the room the boot-only code left: the two never need the
    # heap at the same time.
    #
    # MicroPython interns names (identifiers, short strings, module names, and every
    # one-character string made by iterating or indexing a str) in a table of pools that
    # double: past about 620 names the next pool is one block of about 7 KB (5 KB on ESP32),
    # which a fragmented heap does not have, and whatever interns a name then fails with
    # `memory allocation failed, allocating 640 bytes` (640: the entries). The firmware stays
    # well below it, with every module it can load (tests/unix: the budget): private constants
    # are const() (no name kept), strings are checked as bytes, and tracebacks name modules
    # by their dotted name (tools/build_device.py), which is interned anyway.
    import gc
    from firmware import startup, unload

    # The TLS context is made here, early: it is one block of about 3 KB.
    cfg, tls, errors = startup.load_config(hal.ssl, log)  # logs the config's warnings
    hal.wdt_start((cfg["wdt_timeout_s"] if not errors else 120) * 1000)
    # Setup mode (the access point and its page) instead of the meter, when config.json has no
    # usable Wi-Fi settings or the last boot asked for it (firmware/startup.py setup_reason()).
    why, cfg, errors = startup.setup_reason(store, cfg, errors)
    if errors:
        startup.config_error_loop(hal, log, errors, cfg)  # does not return
    del startup
    unload("startup")
    gc.collect()
    if why is not None:
        from firmware import setup_mode
        return setup_mode.build(hal, log, store, cfg, why, payload)

    from firmware import wiring
    # umqtt.simple None: the link imports it for each connect only (firmware/link.py)
    meter = wiring.build(hal, None, log, store, cfg, tls, payload)
    del wiring
    unload("wiring")  # boot-only
    return meter


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
    # (firmware/wiring.py), so after it the check costs one comparison. (Names here are ones
    # the firmware interns anyway: main.py is compiled at every boot, each name for good.)
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
        _run()
    except Exception as e:  # the firmware could not even start: an update that fails at import
        import bootslot
        bootslot.reboot(e)  # does not return


def _run():
    try:
        micropython.alloc_emergency_exception_buf(100)  # tracebacks from interrupt handlers
    except AttributeError:
        pass  # not on the Unix port
    import gc

    hal = _hal()
    hal.mount()
    import bootslot
    # The firmware tree this boot runs, maybe an OTA slot (bootslot.py), with the slot's HAL on
    # a board; the Unix port keeps the HAL that mounted its simulated flash.
    hal, ms = bootslot.run(hal, _hal if sys.platform == "esp32" else None)
    del bootslot  # boot-only
    gc.collect()  # its garbage (a slot boot reads the record) before the firmware loads
    if ms:  # the trial's ms
        _check(hal, ms)
    from firmware import crashes
    from firmware.log import Log
    from firmware.store import Store
    from firmware.telemetry import Payload
    from firmware import version

    # The largest long-lived buffer first, while the heap is still in one piece.
    payload = Payload()
    log = Log(hal.ticks_ms)
    store = Store(log)
    meter = None
    try:
        log.info("main", "meter firmware starting on %s: %s %s", hal.name, version.TITLE,
                 version.VERSION)
        meter = build(hal, log, store, payload)
        gc.collect()
        # Collect early, before the heap fragments (micropython/micropython :
        # docs/reference/constrained.rst). gc.threshold() counts bytes allocated since the last
        # collection, not a heap level, so it is a fixed amount: a quarter of the smallest
        # heap the meter runs in, the same on every build. (The documented recipe,
        # mem_free() // 4 + mem_alloc(), is most of the heap, and on ESP32 builds whose heap
        # grows from the IDF heap mem_free() also counts that growth room: it would never fire
        # before an allocation failed.)
        gc.threshold(_GC_EVERY)
        meter.run_forever()
    except KeyboardInterrupt:
        # Ctrl-C at the console (or SIGINT on the Unix port): a person is in charge. A started
        # watchdog cannot be stopped; where the port lets its timeout change, the console gets
        # an hour, and a console left open still ends in a reset back to metering.
        try:
            hal.wdt_start(_CONSOLE_WDT_MS)
            log.warn("main", "stopped at the console: the board resets in %d min (watchdog)",
                     _CONSOLE_WDT_MS // 60000)
        except Exception:
            log.warn("main", "stopped at the console: the board resets within wdt_timeout_s")
        raise
    except Exception as e:
        if meter is None and sys.path[0][-6:-1] == "/ota/":  # bootslot.py: .../ota/1 or 2
            # An OTA slot's firmware that cannot even be built (a module wiring loads fails
            # at import): a failed start for bootslot.py to count, as one failing at the
            # imports above is (main(); it falls back after a few), not a crash to pause on.
            raise
        log.error("main", "unexpected %s: %s", type(e).__name__, e)
        sys.print_exception(e)
        _save(meter, log)  # a power cut during the pause must not lose the index
        pause = 10000
        try:
            pause = crashes.pause_ms(store)
        except Exception as e2:
            log.error("main", "while saving state: %r", e2)
        log.error("main", "resetting in %d s", pause // 1000)
        start = hal.ticks_ms()
        while hal.ticks_diff(hal.ticks_ms(), start) < pause:
            hal.wdt_feed()
            hal.sleep_ms(100)
        _save(meter, log)  # the pulses counted during the pause too
        hal.reset()


def _save(meter, log):
    # Planned reset: keep the pulse index (the hardware counter and the interrupt handler
    # kept counting while the main loop was down).
    if meter is None:
        return
    try:
        meter.shutdown()
    except Exception as e:
        log.error("main", "while saving state: %r", e)

main()
