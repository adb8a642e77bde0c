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
    running = _running(cfg)
    pipeline = reading_pipeline(hal, log, store, cfg, payload, rand, running)
    clock = pipeline._clock
    link = Link(umqtt, hal.socket, hal.ticks_ms, hal.ticks_diff, log, wdt_feed=hal.wdt_feed)
    name = cfg["device_name"] or "meter-" + hexlify(hal.unique_id()).decode()
    gesture = BootGesture(store, cfg["reprovision_cycles"], cfg["reprovision_window_s"] * 1000,
                          hal.ticks_diff)
    led = StatusLed(hal.led_setter(cfg["status_led_pin"], cfg["status_led_inverted"]),
                    hal.ticks_diff, log)
    return Supervisor(hal, running, store, link, pipeline, clock, log, rand, name, tls=tls,
                      gesture=gesture, led=led,
                      on_healthy=lambda: entry.forget(store))


def _running(cfg):
    # The running meter keeps only the config fields it reads; the others are for the objects
    # built here, at boot. The validated config has 40 fields, and its keys of 10 characters
    # or more are strings of their own, not interned names: keeping the whole dict would hold
    # 2.5 KB of its 3.3 KB for nothing (docs/benchmarks.md). tests/unit/test_wiring.py finds
    # every field the running modules read, so none can be missing here.
    return {k: cfg[k] for k in (
        # firmware/supervisor.py (its constructor reads the retry_* fields)
        "wifi_ssid", "wifi_password", "tb_host", "tb_port", "ntp_host", "keepalive_s",
        "provision_key", "access_token", "boot_button_pin", "credentials", "retry_min_s",
        "retry_max_s", "retry_slow_s",
        # firmware/provision.py, connecting.py and attributes.py (loaded for their steps)
        "provision_secret", "supplier_key", "cups", "attr_supplier_key", "attr_cups_key",
        "attributes_topic",
        # firmware/setup_request.py (the Wi-Fi failing too long, the BOOT button)
        "setup_password", "setup_after_s",
        # firmware/pipeline.py
        "publish_interval_s", "telemetry_topic", "persist_interval_s", "health_interval_s",
        "pulses_per_kwh") if k in cfg}  # "credentials" is there only when config.json has them


def reading_pipeline(hal, log, store, cfg, payload, rand, running=None):
    """The reading pipeline (pulse input, clock, backlog, payload) as both boots build it:
    build() here, and setup mode (firmware/setup_mode.py), so that pulses are counted and the
    index kept alike in every mode. running: the config fields the pipeline keeps (build():
    the running meter's; None: all of cfg, which setup mode keeps anyway)."""
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
    return Pipeline(hal, running or cfg, store, pulses, Backlog(log, cfg["buffer_points"]), clock,
                    log, payload or Payload())
