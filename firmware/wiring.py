# The one place where the meter's objects are built and connected. firmware/entry.py calls
# build() on the board and on the Unix port; the unit tests' harness and the virtual meters run
# the same code with their HAL and their umqtt. Needed only at boot: entry.py unloads it after.


def build(hal, umqtt, log, store, cfg, tls, payload=None, rand=None):
    """The meter's supervisor, with everything it drives.

    hal: firmware/hal (the board, the Unix port, or the tests' fake); umqtt: the umqtt.simple
    module (or a stand-in), or None: the link imports it for each connect only (entry.py);
    log, store: firmware.log.Log and firmware.store.Store; cfg, tls: the validated config and
    the TLS context (or None) from firmware/startup.py; payload: the telemetry buffer (entry.py
    allocates it first, while the heap is in one piece); rand: a function returning floats in
    [0, 1) for the backoff jitter."""
    from binascii import hexlify
    from firmware import entry  # the crash counter (loaded already: it runs this)
    from firmware.gesture import BootGesture
    from firmware.led import StatusLed
    from firmware.link import Link
    from firmware.supervisor import Supervisor

    if rand is None:
        import random
        rand = random.random
    pipeline = reading_pipeline(hal, log, store, cfg, payload, rand)
    clock = pipeline._clock
    link = Link(umqtt, hal.socket, hal.ticks_ms, hal.ticks_diff, log, wdt_feed=hal.wdt_feed)
    name = cfg["device_name"] or "meter-" + hexlify(hal.unique_id()).decode()
    gesture = BootGesture(store, cfg["reprovision_cycles"], cfg["reprovision_window_s"] * 1000,
                          hal.ticks_diff)
    led = StatusLed(hal.led_setter(cfg["status_led_pin"], cfg["status_led_inverted"]),
                    hal.ticks_diff, log)
    return Supervisor(hal, cfg, store, link, pipeline, clock, log, rand, name, tls=tls,
                      gesture=gesture, led=led,
                      on_healthy=lambda: entry.forget(store))


def reading_pipeline(hal, log, store, cfg, payload, rand):
    """The reading pipeline (pulse input, clock, backlog, payload) as both boots build it:
    build() here, and setup mode (firmware/setup_mode.py), so that pulses are counted and the
    index kept alike in every mode."""
    from firmware.backlog import Backlog
    from firmware.clock import Clock
    from firmware.pipeline import Pipeline
    from firmware.pulses import PulseCounter
    from firmware.telemetry import Payload

    pulses = PulseCounter(hal.ticks_us, hal.ticks_diff, cfg["pulses_per_kwh"],
                          cfg["pulse_min_interval_ms"], cfg["zero_power_timeout_s"])
    pulses.hw = hal.pulse_input(cfg["pulse_pin"], cfg["pulse_pull_up"], cfg["pulse_edge"],
                                pulses.edge, cfg["pulse_hw_counter"] == "auto")
    # The boot's id marks readings taken before the clock is known (firmware/clock.py); from
    # here on the log counts the clock's uptime, which never wraps.
    clock = Clock(hal, log, cfg["ntp_host"], cfg["ntp_interval_s"], int(rand() * 1048576))
    log.uptime_ms = clock.uptime_ms
    return Pipeline(hal, cfg, store, pulses, Backlog(log, cfg["buffer_points"]), clock, log,
                    payload or Payload())
