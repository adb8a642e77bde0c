# Boot-only steps, kept out of main.py so that their code is compiled ahead (.mpy) and can be
# unloaded once the meter runs: config loading, the TLS context, the bad-config halt.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the deploy tests check the DER reader (tests/deploy)
    def const(value):
        return value

_CONFIG_FILE = const("config.json")
_CONFIG_RETRY_MS = const(30000)
_MAX_CA = const(8192)  # bytes of tb_ca: a root certificate takes 1-2 KB in DER
_MAX_CONFIG = const(8192)  # firmware/config.py's limit of config.json
_MAX_CERTS = const(8)
_SETUP_RECORD = const("setup_request")  # written by firmware/setup_request.py open()
_WHY_MAX = const(120)


def _read_limited(path, limit):
    """The file's bytes, limit + 1 of them at most (so that "too large" can be told), or None
    if it cannot be read. The size first: read(n) allocates n bytes whatever the file holds."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(0)
            return f.read(n if n <= limit else limit + 1)
    except OSError:
        return None


def load_config(ssl, log=None):
    """(cfg, TLS context or None, errors): errors is a list of one-line messages, each naming
    its field or the file; warnings go to log. Never raises, whatever the files hold: a config
    that cannot be checked is a config error too (the meter halts with the LED pattern and
    re-reads the file), never an exception into main() and a reset loop."""
    from firmware import unload
    cfg = tls = None
    try:
        from firmware import config
    except Exception as e:  # no room even to load the check
        return None, None, ["%s: could not be checked (%s)" % (_CONFIG_FILE, type(e).__name__)]
    try:
        warnings = []
        cfg, errors = config.load(_CONFIG_FILE, warnings)
        for line in warnings:
            if log is not None:
                log.warn("config", "%s", line)
        path = cfg["tb_ca"] if not errors and cfg["tb_tls"] else None
        if path is not None:  # validated: letters, digits and -._/ only
            bundle = _read_limited(path, _MAX_CA)
            if bundle is None:
                errors = ["tb_ca: file %s not found on flash" % path]
            try:
                if bundle is not None and len(bundle) > _MAX_CA:
                    raise ValueError("larger than %d bytes" % _MAX_CA)
                if bundle is not None:
                    tls = tls_context(ssl, bundle)
            except Exception as e:  # ours, mbedTLS's "invalid cert", or no memory for it
                errors = ["tb_ca: %s: %s" % (path, config.escape(e))]
    except Exception as e:  # a bug in the check itself: still a config error
        errors = ["%s: could not be checked (%s: %s)" % (_CONFIG_FILE, type(e).__name__,
                                                         config.escape(e))]
    del config
    unload("config", "cups", "utf8")  # boot-only: its code and constants back to the heap
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
    """Split concatenated DER certificates (each an ASN.1 SEQUENCE with a definite length).
    At most _MAX_CERTS: each becomes its own bytes object, and mbedTLS keeps each parsed."""
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
        if len(out) == _MAX_CERTS:
            raise ValueError("more than %d certificates" % _MAX_CERTS)
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
        # The file passed config.parse's strict checks (only Wi-Fi fields are wrong), within
        # its size limit; read it again as bounded.
        text = _read_limited(_CONFIG_FILE, _MAX_CONFIG)
        try:
            raw = json.loads(text) if text is not None and len(text) <= _MAX_CONFIG else None
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            return None, cfg, errors
        raw["wifi_ssid"] = "-"
        raw.pop("wifi_password", None)
        cfg2, errors2 = config.validate(raw)
        del config
        unload("config", "cups", "utf8")
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
