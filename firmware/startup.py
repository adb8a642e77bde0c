# Boot-only steps, kept out of main.py so that their code is compiled ahead (.mpy) and can be
# unloaded once the meter runs: config loading, the TLS context, the bad-config halt.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the deploy tests check the DER reader (tests/deploy)
    def const(value):
        return value

_CONFIG_FILE = const("config.json")
_CONFIG_RETRY_MS = const(30000)
_SETUP_RECORD = const("setup_request")  # written by firmware/setup_request.py open()
_WHY_MAX = const(120)


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def load_config(ssl):
    """(cfg, TLS context or None, errors): errors is a list of one-line messages, each naming
    its field."""
    from firmware import config, unload
    text = read(_CONFIG_FILE)
    if text is None:
        return None, None, ["%s not found on flash" % _CONFIG_FILE]
    cfg, errors = config.parse(text)
    del config
    unload("config", "cups")  # boot-only: about 12 KB back to the heap
    tls = None
    if not errors and cfg["tb_tls"]:
        path = cfg["tb_ca"]
        bundle = read(path, "rb")
        if bundle is None:
            errors = ["tb_ca: file %s not found on flash" % path]
        else:
            try:
                tls = tls_context(ssl, bundle)
            except ValueError as e:  # ours, or mbedTLS's "invalid cert"
                errors = ["tb_ca: %s: %s" % (path, e)]
    return cfg, tls, errors


def tls_context(ssl, ca_bundle):
    """An SSLContext trusting every DER certificate in ca_bundle (concatenated DER).

    Made at boot, straight after the config: the context is one block of about 3 KB on the
    heap, which a fragmented heap may no longer have in one piece."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # verifies the chain and the host name
    # mbedTLS parses one DER certificate per call and ignores what follows; repeated calls
    # add to the trusted set.
    for cert in der_certificates(ca_bundle):
        ctx.load_verify_locations(cadata=cert)
    return ctx


def der_certificates(bundle):
    """Split concatenated DER certificates (each an ASN.1 SEQUENCE with a definite length)."""
    mv = memoryview(bundle)
    i = 0
    out = []
    while i + 2 <= len(bundle):
        if bundle[i] != 0x30:
            raise ValueError("not DER certificates (convert PEM with openssl x509 -outform DER)")
        n = bundle[i + 1]
        if n < 0x80:
            hdr, size = 2, n
        else:
            k = n & 0x7F
            if k < 1 or k > 3 or i + 2 + k > len(bundle):
                raise ValueError("bad DER length")
            size = 0
            for j in range(k):
                size = (size << 8) | bundle[i + 2 + j]
            hdr = 2 + k
        end = i + hdr + size
        if end > len(bundle):
            raise ValueError("truncated certificate")
        out.append(bytes(mv[i:end]))
        i = end
    if not out:
        raise ValueError("empty")
    return out



def config_error_loop(hal, log, errors, cfg=None):
    # Nothing is sent with a bad config. The errors are repeated on the console, the LED shows
    # the pattern (on status_led_pin when that field itself is valid), and the file is re-read:
    # a fixed config.json restarts the meter.
    from firmware.led import StatusLed
    pin, inverted = None, False
    if cfg is not None and not [e for e in errors if e.startswith("status_led_")]:
        pin, inverted = cfg["status_led_pin"], cfg["status_led_inverted"]
    led = StatusLed(hal.led_setter(pin, inverted), hal.ticks_diff, log)
    led.show("config-error", hal.ticks_ms())
    while True:
        for line in errors:
            log.error("config", "%s", line)
        log.error("config", "meter halted: fix %s (README: configuration)", _CONFIG_FILE)
        start = hal.ticks_ms()
        while hal.ticks_diff(hal.ticks_ms(), start) < _CONFIG_RETRY_MS:
            hal.wdt_feed()
            led.update(hal.ticks_ms())
            hal.sleep_ms(50)
        _, _, again = load_config(hal.ssl)
        if not again:
            log.info("config", "config.json is valid now; restarting")
            hal.reset()


def setup_reason(store, cfg, errors):
    """Setup mode (the access point and its page, firmware/setup_mode.py) instead of the meter?
    (why, or None; the config to run with; the errors left). main.py asks at every boot.

    It is a boot of its own, so the meter's code (umqtt, the supervisor, the link) and the setup
    code (microdot, the page) never share the heap, and the names setup mode interns (never
    freed) are gone after the reset that ends it. It opens when config.json is valid except for
    its Wi-Fi settings (missing or bad: the page is where to give the meter a network; the
    config returned then has wifi_ssid None), or when the last boot asked for it (Wi-Fi failing
    for setup_after_s, or the BOOT button held 10 s). The request is removed as it is read:
    whatever ends setup mode (success, its timeout, a crash, a power cut) brings a normal boot.
    Never without a setup_password: the access point is never open, never a shared default."""
    if errors:
        # Only Wi-Fi errors? Then the file is checked again with its Wi-Fi settings set aside,
        # so that everything else gets the firmware's own checks and defaults. (Bytes: a short
        # str constant would be one more interned name.)
        if cfg is None or [e for e in errors if e.encode()[:5] != b"wifi_"]:
            return None, cfg, errors
        import json
        from firmware import config, unload
        text = read(_CONFIG_FILE)
        try:
            raw = json.loads(text) if text is not None else None
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            return None, cfg, errors
        raw["wifi_ssid"] = "-"
        raw.pop("wifi_password", None)
        cfg2, errors2 = config.validate(raw)
        del config
        unload("config", "cups")
        if errors2:
            return None, cfg, errors + errors2  # more than the Wi-Fi is wrong: all of it
        if not cfg2["setup_password"]:
            return None, cfg, errors + ["setup_password: needed to set the Wi-Fi from a phone "
                                        "(tools/meterconfig.py makes one)"]
        cfg2["wifi_ssid"] = None
        return "no usable Wi-Fi settings (%s)" % errors[0], cfg2, []
    rec = store.read(_SETUP_RECORD)
    if rec is None:
        return None, cfg, errors
    store.remove(_SETUP_RECORD)
    why = rec.get("why") if isinstance(rec, dict) else None
    if not cfg["setup_password"]:
        return None, cfg, errors  # a stale request: the supervisor asks only with a password
    return why[:_WHY_MAX] if isinstance(why, str) and why else "requested", cfg, errors
