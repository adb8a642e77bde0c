# The meter's run: builds every object (the logic modules do nothing at import time and receive
# what they need), then runs the meter. main.py, the boot loader's part that an update never
# replaces, calls run() once the firmware tree of this boot is chosen (bootslot.py); this module
# is the firmware's own: compiled (.mpy), shipped in every OTA package, replaced by an update.
# It never dies: anything that escapes is logged, the pulse index is saved, and the board resets
# after a pause that grows with repeated crashes (the crash counter below), so a crash loop can
# neither wear the flash nor hammer the server. What it lets through is a firmware that cannot
# start, for main.py's guard to count (bootslot.reboot()): a failure at its import, and one
# while an OTA slot's firmware is built.
#
# The crash counter lives here, with the handler that needs it, rather than in a module of its
# own: it must be loaded before a crash (an import then may be the one allocation too many),
# and a module costs its own names and about 300 bytes of heap besides its code.

import sys

from micropython import const

_GC_EVERY = const(16384)  # bytes allocated between automatic collections
_CONSOLE_WDT_MS = const(3600000)
_CRASHES = const("crash")  # the crash counter's record (firmware/store.py)


def build(hal, log, store, payload):
    # Boot-only work first (reading and checking the config, the TLS context), then the
    # meter's code is loaded into the room the boot-only code left: the two never need the
    # heap at the same time. (Every name a module interns stays for good: main.py says why
    # that counts.)
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


def run(hal):
    """Build the meter on hal and run it; never returns (the board resets). Raises only
    KeyboardInterrupt (a person at the console: the board drops to the REPL) and, for main.py's
    guard, a failure to import what it needs or to build an OTA slot's firmware."""
    import gc
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
        # bootslot.py: an OTA slot is first on the path, .../ota/1 or .../ota/2 (bytes: a str
        # literal this short would be interned for good)
        if meter is None and sys.path[0].encode()[-6:-1] == b"/ota/":
            # An OTA slot's firmware that cannot even be built (a module wiring loads fails
            # at import): a failed start for main.py's guard and bootslot.py to count (it falls
            # back after a few), as one failing at the imports above is, not a crash to pause on.
            raise
        log.error("main", "unexpected %s: %s", type(e).__name__, e)
        sys.print_exception(e)
        _save(meter, log)  # a power cut during the pause must not lose the index
        pause = 10000
        try:
            pause = pause_ms(store)
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


def pause_ms(store):
    """Count one more crash; the pause before the reset: 10 s after the first crash, doubling
    up to 10 min while crashes keep coming within the first hour after boot. Best effort: a
    flash that refuses the count (firmware/store.py returns False, never raises) leaves the
    pause where the count on flash puts it."""
    rec = store.read(_CRASHES) or {}
    n = rec.get("n", 0) if isinstance(rec.get("n"), int) else 0
    store.write(_CRASHES, {"n": n + 1})
    return min(10000 << min(n, 6), 600000)


def forget(store):
    """After an hour of running (the supervisor's on_healthy, firmware/wiring.py): the next
    crash starts from the shortest pause again (best effort, as above: a refused remove is
    tried again by the store)."""
    store.remove(_CRASHES)
