# Meter firmware entry point, the same file on an ESP32 and on the MicroPython Unix port.
# Builds every object (the logic modules do nothing at import time and receive what they
# need), then runs the meter. It never dies: anything that escapes is logged, the pulse index
# is saved, and the board resets after a pause that grows with repeated crashes, so a crash
# loop can neither wear the flash nor hammer the server.

import sys

import micropython

_CONFIG_FILE = "config.json"
_CRASH_RECORD = "crash"
_CONFIG_RETRY_MS = 30000


def _make_hal():
    if sys.platform == "esp32":
        from firmware.hal.esp32 import Hal
    else:
        from firmware.hal.unix import Hal
    return Hal()


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def load_config():
    from firmware import config, unload
    text = _read(_CONFIG_FILE)
    if text is None:
        return None, ["%s not found on flash" % _CONFIG_FILE]
    cfg, errors = config.parse(text)
    del config
    unload("config", "cups")  # boot-only: about 12 KB back to the heap
    if not errors and cfg["tb_tls"] and _read(cfg["tb_ca"], "rb") is None:
        errors = ["tb_ca: file %s not found on flash" % cfg["tb_ca"]]
    return cfg, errors


def config_error_loop(hal, log, errors, led):
    # Nothing is sent with a bad config. The errors are repeated on the console, the LED shows
    # the pattern, and the file is re-read: a fixed config.json restarts the meter.
    while True:
        for line in errors:
            log.error("config", "%s", line)
        log.error("config", "meter halted: fix %s (README: config reference)", _CONFIG_FILE)
        start = hal.ticks_ms()
        while hal.ticks_diff(hal.ticks_ms(), start) < _CONFIG_RETRY_MS:
            hal.wdt_feed()
            led.update(hal.ticks_ms())
            hal.sleep_ms(50)
        _, again = load_config()
        if not again:
            log.info("config", "config.json is valid now; restarting")
            hal.reset()


def build(hal, log, cfg, rand, on_healthy):
    from binascii import hexlify
    from umqtt import simple
    from firmware.gesture import BootGesture
    from firmware.link import Link
    from firmware.meter import Meter
    from firmware.pulses import PulseCounter
    from firmware.backlog import Backlog
    from firmware.remote import Remote
    from firmware.status import StatusLed
    from firmware.store import Store

    store = Store(log)
    pulses = PulseCounter(hal.ticks_us, hal.ticks_diff, cfg["pulses_per_kwh"],
                          cfg["pulse_min_interval_ms"], cfg["zero_power_timeout_s"])
    pulses.hw = hal.pulse_input(cfg["pulse_pin"], cfg["pulse_pull_up"], cfg["pulse_edge"],
                                pulses.edge, cfg["pulse_hw_counter"] == "auto")
    link = Link(simple, hal.socket, hal.ssl, hal.ticks_ms, hal.ticks_diff, log)
    tls = link.tls_context(_read(cfg["tb_ca"], "rb")) if cfg["tb_tls"] else None
    name = cfg["device_name"] or "meter-" + hexlify(hal.unique_id()).decode()
    gesture = BootGesture(store, cfg["reprovision_cycles"], cfg["reprovision_window_s"] * 1000,
                          hal.ticks_diff)
    led = StatusLed(hal.led_setter(cfg["status_led_pin"], cfg["status_led_inverted"]),
                    hal.ticks_diff, log)
    return Meter(hal, cfg, store, link, pulses, Backlog(log, cfg["buffer_points"]), log, rand,
                 name, tls=tls, gesture=gesture, led=led, extensions=Remote(log),
                 on_healthy=on_healthy)


def _crash_pause_ms(store):
    # 10 s after the first crash, doubling up to 10 min while crashes keep coming within the
    # first hour after boot; Meter forgets the record after an hour of running.
    rec = store.read(_CRASH_RECORD) or {}
    n = rec.get("n", 0) if isinstance(rec.get("n"), int) else 0
    store.write(_CRASH_RECORD, {"n": n + 1})
    return min(10000 << min(n, 6), 600000)


def main():
    try:
        micropython.alloc_emergency_exception_buf(100)  # tracebacks from interrupt handlers
    except AttributeError:
        pass  # not on the Unix port
    import random
    from firmware.log import Log
    from firmware.status import StatusLed
    from firmware.store import Store

    hal = _make_hal()
    hal.mount()
    log = Log(hal.ticks_ms)
    meter = None
    store = Store(log)
    try:
        log.info("main", "meter firmware starting on %s", hal.name)
        cfg, errors = load_config()
        hal.wdt_start((cfg["wdt_timeout_s"] if not errors else 120) * 1000)
        if errors:
            led = StatusLed(hal.led_setter(None, False), hal.ticks_diff, log)
            led.show("config-error", hal.ticks_ms())
            config_error_loop(hal, log, errors, led)
        meter = build(hal, log, cfg, random.random, lambda: store.remove(_CRASH_RECORD))
        import gc
        gc.collect()
        # Collect early, before the heap fragments (docs/reference/constrained.rst).
        gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
        meter.run_forever()
    except KeyboardInterrupt:
        raise  # Ctrl-C at the console (or SIGINT on the Unix port): a person is in charge
    except Exception as e:
        log.error("main", "unexpected %s: %s", type(e).__name__, e)
        sys.print_exception(e)
        pause = 10000
        try:
            if meter is not None:
                meter.shutdown()  # planned reset: keep the pulse index
            pause = _crash_pause_ms(store)
        except Exception as e2:
            log.error("main", "while saving state: %r", e2)
        log.error("main", "resetting in %d s", pause // 1000)
        start = hal.ticks_ms()
        while hal.ticks_diff(hal.ticks_ms(), start) < pause:
            hal.wdt_feed()
            hal.sleep_ms(100)
        hal.reset()


main()
