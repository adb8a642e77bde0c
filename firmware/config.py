# Meter configuration: the fields of config.json, their defaults, and their validation.
# Shared by the firmware (checked at every boot) and tools/meterconfig.py (checked before a
# file is written), so a config the tool accepts is one the meter accepts.
#
# Every problem is reported as one line "<field>: <reason>"; all problems are reported
# at once so a technician fixes the file in one go. Values are never echoed for secret fields.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the host tools share this module (tools/meterconfig.py)
    def const(value):
        return value

from firmware.cups import cups_error

DEFAULT_HOST = "mqtt.thingsboard.cloud"
DEFAULT_SUPPLIER_ATTR = "Power_suppier_secret_key"  # sic: the platform's rule chain expects this spelling
DEFAULT_CUPS_ATTR = "CUPs"

# Kinds
_STR = const(0)  # printable string
_INT = const(2)
_BOOL = const(3)
_CHOICE = const(4)
_OPTSTR = const(5)  # string or null/absent
_OPTINT = const(6)  # int or null/absent

# name: (kind, default, required, extra)
#   extra: (min, max) for ints, tuple of choices for _CHOICE, (min_len, max_len) for strings
FIELDS = {
    "wifi_ssid": (_STR, None, True, (1, 32)),
    "wifi_password": (_STR, "", False, (0, 63)),
    "tb_host": (_STR, DEFAULT_HOST, False, (1, 253)),
    "tb_port": (_OPTINT, None, False, (1, 65535)),  # None: 8883 with TLS, 1883 without
    "tb_tls": (_BOOL, True, False, None),
    "tb_ca": (_OPTSTR, "ca.der", False, (1, 64)),  # CA certificate (DER) on flash, for tb_tls
    "tb_plain_ok": (_BOOL, False, False, None),  # must be true to run without TLS
    "provision_key": (_STR, None, True, (1, 255)),
    "provision_secret": (_STR, None, True, (1, 255)),
    "device_name": (_OPTSTR, None, False, (1, 255)),  # None: "meter-" + hex(machine.unique_id())
    "access_token": (_OPTSTR, None, False, (1, 255)),  # optional device-supplied token
    "supplier_key": (_STR, None, True, (1, 255)),
    "cups": (_STR, None, True, (20, 22)),
    "pulse_pin": (_INT, None, True, (0, 48)),
    "pulse_pull_up": (_BOOL, True, False, None),
    "pulse_edge": (_CHOICE, "falling", False, ("falling", "rising")),
    "pulses_per_kwh": (_INT, 1000, False, (1, 100000)),
    "pulse_min_interval_ms": (_INT, 15, False, (0, 10000)),
    "pulse_hw_counter": (_CHOICE, "auto", False, ("auto", "off")),
    "publish_interval_s": (_INT, 60, False, (2, 86400)),
    "health_interval_s": (_INT, 600, False, (0, 86400)),  # 0: never send health values
    "persist_interval_s": (_INT, 60, False, (10, 3600)),
    "zero_power_timeout_s": (_INT, 300, False, (10, 3600)),
    "attr_supplier_key": (_STR, DEFAULT_SUPPLIER_ATTR, False, (1, 255)),
    "attr_cups_key": (_STR, DEFAULT_CUPS_ATTR, False, (1, 255)),
    "ntp_host": (_STR, "pool.ntp.org", False, (1, 253)),
    "keepalive_s": (_INT, 60, False, (10, 600)),
    "reprovision_cycles": (_INT, 4, False, (0, 20)),  # 0 disables the power-cycle gesture
    "reprovision_window_s": (_INT, 10, False, (3, 60)),
    "retry_min_s": (_INT, 2, False, (1, 600)),
    "retry_max_s": (_INT, 300, False, (10, 86400)),
    "retry_slow_s": (_INT, 3600, False, (10, 86400)),  # NOT_FOUND, FAILURE with no way forward
    "status_led_pin": (_OPTINT, None, False, (0, 48)),
    "status_led_inverted": (_BOOL, False, False, None),
    "boot_button_pin": (_OPTINT, 0, False, (0, 48)),  # BOOT on devkits; null: no button
    "wdt_timeout_s": (_INT, 120, False, (60, 3600)),  # above DNS + one exchange, twice over (README)
    "buffer_points": (_INT, 2880, False, (16, 100000)),  # offline readings kept on flash
}

# Masked in every log line and status output (firmware.log.mask).
SECRET_FIELDS = ("wifi_password", "provision_key", "provision_secret", "supplier_key", "access_token")


def _check_text(value, lo, hi):
    if not isinstance(value, str):
        return "must be a string"
    n = len(value)
    if n < lo or n > hi:
        if lo == hi:
            return "must be %d characters, got %d" % (lo, n)
        return "must be %d to %d characters, got %d" % (lo, hi, n)
    # Over the UTF-8 bytes, not the characters: iterating a str makes one-character strings,
    # which MicroPython interns for good (main.py: the interned-name table must not grow).
    for b in value.encode():
        if b < 32 or b == 127:
            return "must not contain control characters"
    if lo > 0 and not value.strip():
        return "must not be blank"
    return None


def _check(spec, value):
    kind, _default, _required, extra = spec
    if kind == _BOOL:
        return None if isinstance(value, bool) else "must be true or false"
    if kind in (_INT, _OPTINT):
        if kind == _OPTINT and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if value < extra[0] or value > extra[1]:
            return "must be between %d and %d, got %d" % (extra[0], extra[1], value)
        return None
    if kind == _CHOICE:
        if value not in extra:
            return "must be one of %s" % ", ".join(extra)
        return None
    if kind == _OPTSTR and value is None:
        return None
    return _check_text(value, extra[0], extra[1])


def validate(raw):
    """Check a decoded config.json object. Returns (config dict with defaults filled, errors).

    errors is a list of one-line messages, each naming its field; config is only meaningful
    when errors is empty.
    """
    if not isinstance(raw, dict):
        return None, ["the file must hold a JSON object"]
    errors = []
    cfg = {}
    for name in raw:
        if name not in FIELDS:
            errors.append("%s: unknown field (typo?)" % name)
    for name, spec in FIELDS.items():
        if name not in raw:
            if spec[2]:
                errors.append("%s: required" % name)
            cfg[name] = spec[1]
            continue
        value = raw[name]
        if name == "cups" and isinstance(value, str):
            # Accept the printed form "ES 1234-5678..." and store the compact one.
            value = value.replace(" ", "").replace("-", "").upper()
        why = _check(spec, value)
        if why is None and name == "cups":
            why = cups_error(value)
        if why is not None:
            errors.append("%s: %s" % (name, why))
        cfg[name] = value
    if not errors:
        _cross_checks(cfg, errors)
    if not errors and cfg["tb_port"] is None:
        cfg["tb_port"] = 8883 if cfg["tb_tls"] else 1883
    return cfg, errors


def _cross_checks(cfg, errors):
    if not cfg["tb_tls"] and not cfg["tb_plain_ok"]:
        errors.append("tb_tls: false sends tokens and keys in clear text; "
                      "set tb_plain_ok to true to allow it")
    if cfg["tb_tls"] and cfg["tb_ca"] is None:
        errors.append("tb_ca: required when tb_tls is true (the server certificate is always verified)")
    if cfg["retry_min_s"] > cfg["retry_max_s"]:
        errors.append("retry_min_s: must not exceed retry_max_s")
    if cfg["attr_supplier_key"] == cfg["attr_cups_key"]:
        errors.append("attr_cups_key: must differ from attr_supplier_key")
    wp = cfg["wifi_password"]
    if wp and len(wp) < 8:
        errors.append("wifi_password: must be empty (open network) or 8 to 63 characters")
    pins = [cfg[k] for k in ("pulse_pin", "status_led_pin", "boot_button_pin") if cfg[k] is not None]
    if len(pins) != len(set(pins)):
        errors.append("pulse_pin: pulse_pin, status_led_pin and boot_button_pin must differ")
    if cfg["device_name"] is not None and cfg["device_name"] == "provision":
        errors.append("device_name: 'provision' is reserved by ThingsBoard")
    if cfg["access_token"] is not None and cfg["access_token"] == "provision":
        errors.append("access_token: 'provision' is reserved by ThingsBoard")


def parse(text):
    """Decode config.json text and validate it. Never raises on bad input."""
    import json
    try:
        raw = json.loads(text)
    except ValueError:
        return None, ["config.json is not valid JSON"]
    return validate(raw)
