# Meter configuration: the fields of config.json, their defaults, and their validation.
# Shared by the firmware (checked at every boot) and tools/meterconfig.py (checked before a
# file is written), so a config the tool accepts is one the meter accepts.
#
# Every problem is reported as one line "<field>: <reason>" (or "<file>: <reason>" for the file
# as a whole); all problems are reported at once, sorted, so a technician fixes the file in one
# go. Values are never echoed: a field name the validator does not know is shown escaped and
# cut short (escape() below), because it may hold anything, a newline included.
#
# The same verdict on CPython and MicroPython. Nothing here relies on a str method or a parser
# whose behaviour differs between the two: MicroPython's json.loads accepts trailing commas,
# missing commas and colons, leading zeros, raw control characters and unknown escapes
# ("\x41" becomes "x41"), and its UTF-8 decoder accepts overlong forms and surrogates, while
# CPython's upper(), strip() and isspace() know all of Unicode (a CUPS typed with a long s,
# "ſ", upper-cases to "S" on CPython only). So the file is first checked byte by byte as
# strict JSON in strict UTF-8 (_json_error), json.loads then only ever sees text both parsers
# read alike, and text fields are checked over their UTF-8 bytes with ASCII-only rules.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the host tools share this module (tools/meterconfig.py)
    def const(value):
        return value

from firmware import utf8
from firmware.cups import cups_error

DEFAULT_HOST = "mqtt.thingsboard.cloud"
DEFAULT_SUPPLIER_ATTR = "Power_suppier_secret_key"  # sic: the platform's rule chain expects this spelling
_DEFAULT_CUPS_ATTR = const("CUPs")

# Kinds
_STR = const(0)  # printable string
_INT = const(2)
_BOOL = const(3)
_CHOICE = const(4)
_OPTSTR = const(5)  # string or null/absent
_OPTINT = const(6)  # int or null/absent
_PIN = const(7)  # an ESP32 GPIO
_OPTPIN = const(8)  # an ESP32 GPIO or null/absent
_KEY = const(9)  # a ThingsBoard attribute key (docs/thingsboard.md §14.11)
_TOPIC = const(10)  # an MQTT topic name the meter publishes to
_OPTFILE = const(11)  # a file name on flash, or null
_BYTESTR = const(12)  # a string measured in bytes (UTF-8), as the ESP32's Wi-Fi driver does

# name: (kind, default, required, extra)
#   required: True, False, or None for a field the config dict holds only when the file gives
#   it (read it with cfg.get(name), or cfg.get(name) or the default): the dict stays alive for
#   as long as the meter runs, and each key and value of it is heap the TLS handshake needs.
#   extra: (min, max) for ints and pins, tuple of choices for _CHOICE, (min_len, max_len) for
#   text (characters; UTF-16 units for _KEY, as ThingsBoard counts; bytes for _TOPIC and
#   _BYTESTR, as MQTT and the Wi-Fi driver count)
FIELDS = {
    "wifi_ssid": (_BYTESTR, None, True, (1, 32)),
    "wifi_password": (_BYTESTR, "", False, (0, 63)),
    "tb_host": (_STR, DEFAULT_HOST, False, (1, 253)),
    "tb_port": (_OPTINT, None, False, (1, 65535)),  # None: 8883 with TLS, 1883 without
    "tb_tls": (_BOOL, True, False, None),
    "tb_ca": (_OPTFILE, "ca.der", False, (1, 64)),  # CA certificate (DER) on flash, for tb_tls
    "tb_plain_ok": (_BOOL, False, False, None),  # must be true to run without TLS
    # Credentials: provision_key and provision_secret to provision, or ready credentials (an
    # access_token alone, or the mqtt_* fields) to connect without ever provisioning.
    "provision_key": (_OPTSTR, None, False, (1, 255)),
    "provision_secret": (_OPTSTR, None, False, (1, 255)),
    "access_token": (_OPTSTR, None, False, (1, 255)),  # with provision_key: offered when provisioning
    "mqtt_client_id": (_OPTSTR, None, None, (1, 255)),  # MQTT_BASIC
    "mqtt_username": (_OPTSTR, None, None, (1, 255)),
    "mqtt_password": (_OPTSTR, None, None, (1, 255)),
    "device_name": (_OPTSTR, None, False, (1, 255)),  # None: "meter-" + hex(machine.unique_id())
    "supplier_key": (_STR, None, True, (1, 255)),
    "cups": (_STR, None, True, (20, 22)),
    "telemetry_topic": (_TOPIC, "v1/devices/me/telemetry", None, (1, 65535)),
    "attributes_topic": (_TOPIC, "v1/devices/me/attributes", None, (1, 65535)),
    "pulse_pin": (_PIN, None, True, (0, 39)),
    "pulse_pull_up": (_BOOL, True, False, None),
    "pulse_edge": (_CHOICE, "falling", False, ("falling", "rising")),
    "pulses_per_kwh": (_INT, 1000, False, (1, 100000)),
    "pulse_min_interval_ms": (_INT, 15, False, (0, 10000)),
    "pulse_hw_counter": (_CHOICE, "auto", False, ("auto", "off")),
    "publish_interval_s": (_INT, 60, False, (2, 86400)),
    "health_interval_s": (_INT, 600, False, (0, 86400)),  # 0: never send health values
    "persist_interval_s": (_INT, 60, False, (10, 3600)),
    "zero_power_timeout_s": (_INT, 300, False, (10, 3600)),
    "attr_supplier_key": (_KEY, DEFAULT_SUPPLIER_ATTR, False, (1, 255)),
    "attr_cups_key": (_KEY, _DEFAULT_CUPS_ATTR, False, (1, 255)),
    "ntp_host": (_STR, "pool.ntp.org", False, (1, 253)),
    "ntp_interval_s": (_INT, 14400, False, (60, 86400)),  # re-sync the clock this often
    "keepalive_s": (_INT, 60, False, (10, 600)),
    "reprovision_cycles": (_INT, 4, False, (0, 20)),  # 0 disables the power-cycle gesture
    "reprovision_window_s": (_INT, 10, False, (3, 60)),
    "retry_min_s": (_INT, 2, False, (1, 600)),
    "retry_max_s": (_INT, 300, False, (10, 86400)),
    "retry_slow_s": (_INT, 3600, False, (10, 86400)),  # NOT_FOUND, FAILURE with no way forward
    "status_led_pin": (_OPTPIN, None, False, (0, 39)),
    "status_led_inverted": (_BOOL, False, False, None),
    "boot_button_pin": (_OPTPIN, 0, False, (0, 39)),  # BOOT on devkits; null: no button
    "wdt_timeout_s": (_INT, 120, False, (60, 3600)),  # above DNS + one exchange, twice over (README)
    "buffer_points": (_INT, 2880, False, (16, 100000)),  # offline readings kept on flash
    # The setup access point (README: technician's guide; firmware/setup_mode.py).
    "setup_password": (_OPTSTR, None, False, (8, 63)),  # WPA2 key, from meterconfig; null: never
    "setup_after_s": (_INT, 600, False, (0, 86400)),  # Wi-Fi failing this long opens it; 0: never
    "setup_timeout_s": (_INT, 900, False, (60, 3600)),  # closes after this long with no request
}

# Masked in every log line and status output (firmware.log.mask).
SECRET_FIELDS = ("wifi_password", "provision_key", "provision_secret", "supplier_key",
                 "access_token", "mqtt_client_id", "mqtt_username", "mqtt_password",
                 "setup_password")

_CONFIG_FILE = const("config.json")
_ESCAPE_MAX = const(80)
# Limits of the file, checked before anything is parsed: a config of every field at its
# longest fits in a few KB, and json.loads must never be handed what a 100 KB heap cannot hold
# (on MicroPython a deep or long array costs a heap block per element).
_MAX_FILE = const(8192)  # bytes
_MAX_DEPTH = const(8)  # nested arrays/objects
_MAX_VALUES = const(512)  # values of any kind in the file
_MAX_NUMBER = const(32)  # characters of one number (CPython refuses ints over 4300 digits)

# The ESP32 (classic, as the pinned ESP32_GENERIC release), one letter per GPIO 0-39:
#   o  a plain GPIO
#   s  a strapping pin (0, 2, 5, 12, 15), read at power-up
#   u  the serial console (1 TX, 3 RX): the log and the REPL run over it
#   f  wired to the SPI flash chip (6-11): driving it stops the board
#   x  does not exist (20, 24, 28-31)
#   i  input only, no internal pull-up or pull-down (34-39)
_GPIO = const(b"susuosffffffsoosooooxoooxoooxxxxooiiiiii")

# Scanner states (_json_error)
_VALUE = const(0)  # a value
_VALUE_OR_END = const(1)  # a value or "]" (just after "[")
_KEY_NAME = const(2)  # a field name
_KEY_OR_END = const(3)  # a field name or "}" (just after "{")
_COLON = const(4)
_NEXT = const(5)  # "," or the closing bracket (at the top level: the end of the text)


# Interned names are few on purpose (tests/unix: the budget; main.py says why): helpers are
# inlined, argument names are mostly ones MicroPython has built in (index, keys, name), and
# short constant strings are bytes (str constants of up to 10 characters are interned).


def escape(value):
    """value (str, bytes or an exception) as printable ASCII, safe in one log line: a backslash
    is doubled, every other byte outside 0x20-0x7E becomes \\xNN (a newline cannot start a
    fake line, no terminal escape or bidi control reaches the console), and text longer than
    80 characters is cut, marked by "...". Here, not in firmware/log.py, because only boot-time
    code needs it: this module is unloaded after boot (log.py stays, and heap is short)."""
    if not isinstance(value, (str, bytes, bytearray)):
        value = str(value)
    cut = len(value) > _ESCAPE_MAX
    raw = value[:_ESCAPE_MAX]
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeError:  # CPython only: a lone surrogate (an undecodable byte in argv)
            raw = raw.encode("utf-8", "surrogatepass")
    # Built in a bytearray from the bytes: iterating or indexing a str would make one-character
    # strings, which MicroPython interns for good.
    out = bytearray()
    for b in raw:
        if b == 92:
            out.extend(b"\\\\")
        elif 32 <= b < 127:
            out.append(b)
        else:
            out.extend(b"\\x%02x" % b)
    if cut:
        out.extend(b"...")
    return out.decode()


def load(path=_CONFIG_FILE, warnings=None):
    """Read a config file (at most _MAX_FILE bytes of it) and check it: (config, errors), as
    parse(). Never raises on bad input."""
    try:
        with open(path, "rb") as f:
            # The size first: read(n) allocates n bytes whatever the file holds, and a block of
            # 8 KB at boot is what a 100 KB heap can least spare.
            f.seek(0, 2)
            n = f.tell()
            f.seek(0)
            data = f.read(n if n <= _MAX_FILE else _MAX_FILE + 1)
    except OSError as e:
        return None, ["%s: %s" % (escape(path), "no such file" if e.args and e.args[0] == 2
                                  else "cannot be read (%s)" % escape(e))]  # 2: ENOENT
    return parse(data, warnings, path)


def parse(data, warnings=None, name=_CONFIG_FILE):
    """Check the bytes of a config file as strict JSON in strict UTF-8, decode and validate
    them: (config, errors), as validate(). File-level errors start with `name`. A str is
    checked as its UTF-8 encoding."""
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeError:  # CPython: a lone surrogate
            return None, ["%s: not valid UTF-8" % escape(name)]
    if len(data) > _MAX_FILE:
        why = "larger than %d bytes" % _MAX_FILE
    elif data[:3] == b"\xef\xbb\xbf":
        why = "starts with a byte-order mark: save it as UTF-8 without BOM"
    elif data[:2] == b"\xff\xfe" or data[:2] == b"\xfe\xff" or b"\x00" in data[:2]:
        why = "UTF-16 text: save it as UTF-8"
    elif data[:1] == b"\xff":
        why = "starts with 0xFF bytes: erased or corrupt flash"
    else:
        why = _json_error(data)
    if not isinstance(why, int):
        return None, ["%s: %s" % (escape(name), why)]
    import json
    raw = json.loads(data)
    if isinstance(raw, dict) and len(raw) != why:
        # Fewer fields than names: a name is given twice (perhaps spelled with an escape) and
        # json.loads kept only the last value. Find it to name it.
        spans = []
        _json_error(data, spans)
        seen = []
        why = "a field given twice"
        for i in range(0, len(spans), 2):
            key = json.loads(data[spans[i]:spans[i + 1]])
            if key in seen:
                why = "field %s given twice (only the last would count)" % escape(key)
                break
            seen.append(key)
        return None, ["%s: %s" % (escape(name), why)]
    return validate(raw, warnings)


def _json_error(data, keys=None):
    """The number of fields of the top-level object when data is one strict JSON text
    (RFC 8259) in valid UTF-8 within the limits above, else a reason saying where (line,
    column, field). The offsets of the top-level field names go to `keys` if given."""
    n = len(data)
    stack = bytearray(_MAX_DEPTH)
    depth = values = fields = i = 0
    key = key_end = -1  # the current top-level field name, for the message
    state = _VALUE
    why = None
    while why is None:
        while i < n and data[i] in b" \t\n\r":
            i += 1
        if i >= n:
            if depth or state != _NEXT:
                why = "the file ends too early" if n else "empty"
                break
            return fields
        b = data[i]
        if state == _NEXT:
            if not depth:
                why = "unexpected text after the end"
            elif b == 44:  # ,
                state = _KEY_NAME if stack[depth - 1] == 123 else _VALUE
                if depth == 1:
                    key = -1
                i += 1
            elif b == stack[depth - 1] + 2:  # "}" is "{" + 2, "]" is "[" + 2
                depth -= 1
                i += 1
            elif stack[depth - 1] == 123:
                why = "expected ',' or '}' (a missing comma?)"
            else:
                why = "expected ',' or ']' (a missing comma?)"
            continue
        if state == _COLON:
            if b == 58:  # :
                state = _VALUE
                i += 1
            else:
                why = "expected ':' after the field name"
            continue
        if state == _KEY_OR_END and b == 125 or state == _VALUE_OR_END and b == 93:
            depth -= 1
            state = _NEXT
            i += 1
            continue
        if state == _KEY_NAME or state == _KEY_OR_END:
            if b != 34:
                why = "expected a field name in double quotes"
                continue
        else:
            values += 1
            if values > _MAX_VALUES:
                why = "more than %d values" % _MAX_VALUES
                continue
            if b == 123 or b == 91:  # { [
                if depth == _MAX_DEPTH:
                    why = "nested deeper than %d levels" % _MAX_DEPTH
                    continue
                stack[depth] = b
                depth += 1
                state = _KEY_OR_END if b == 123 else _VALUE_OR_END
                i += 1
                continue
        start = i
        if b == 34:  # a string: a field name or a value
            i += 1
            while why is None:
                if i >= n:
                    why = "the file ends inside a string"
                    break
                b = data[i]
                if b == 34:
                    i += 1
                    break
                if b == 92:  # backslash
                    c = data[i + 1] if i + 1 < n else 0
                    if c == 117:  # \uXXXX, four hex digits (by hand: int() takes more)
                        cp = 0
                        for j in range(i + 2, i + 6):
                            c = data[j] if j < n else 0
                            if 48 <= c <= 57:
                                c -= 48
                            elif 65 <= c <= 70:
                                c -= 55
                            elif 97 <= c <= 102:
                                c -= 87
                            else:
                                cp = -1
                                break
                            cp = cp << 4 | c
                        if cp < 0:
                            why = "bad \\u escape (four hex digits)"
                        elif 0xD800 <= cp <= 0xDFFF:
                            why = "\\u escape of a UTF-16 surrogate: write the character itself"
                        else:
                            i += 6
                    elif c and c in b"\"\\/bfnrt":
                        i += 2
                    else:
                        why = "bad escape (JSON has \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"
                elif b < 32:
                    why = "a control character inside a string (write it as \\n, \\t or \\uXXXX)"
                elif b < 128:
                    i += 1
                elif utf8.code_point(data, i, n) < 0:
                    why = "not valid UTF-8"
                else:
                    i += 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if why is not None:
                continue
            if state == _KEY_NAME or state == _KEY_OR_END:
                if depth == 1:
                    fields += 1
                    key, key_end = start, i
                    if keys is not None:
                        keys.append(start)
                        keys.append(i)
                state = _COLON
                continue
        elif b == 45 or 48 <= b <= 57:  # -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
            if b == 45:
                i += 1
            j = i
            while i < n and 48 <= data[i] <= 57:
                i += 1
            ok = i > j and (data[j] != 48 or i - j == 1)
            if i < n and data[i] == 46:  # .
                i += 1
                j = i
                while i < n and 48 <= data[i] <= 57:
                    i += 1
                ok = ok and i > j
            if i < n and data[i] in b"eE":
                i += 1
                if i < n and data[i] in b"+-":
                    i += 1
                j = i
                while i < n and 48 <= data[i] <= 57:
                    i += 1
                ok = ok and i > j
            if not ok:
                why = "not a valid JSON number"
            elif i - start > _MAX_NUMBER:
                why = "a number longer than %d characters" % _MAX_NUMBER
            if why is not None:
                i = start
                continue
        elif data[i:i + 4] == b"true" or data[i:i + 4] == b"null":
            i += 4
        elif data[i:i + 5] == b"false":
            i += 5
        else:
            why = "expected a value"
            continue
        state = _NEXT
    if not n:
        return why
    # Where: line and column (in characters) of byte i, and the field it is in.
    line = data.count(b"\n", 0, i) + 1
    col = 1
    for j in range(data.rfind(b"\n", 0, i) + 1, i):
        if data[j] & 0xC0 != 0x80:
            col += 1
    where = ""
    if key >= 0 and depth:
        import json
        where = " (field %s)" % escape(json.loads(data[key:key_end]))
    return "line %d, column %d: %s%s" % (line, col, why, where)


def _check(name, spec, value):
    kind, _default, _required, extra = spec
    if kind == _BOOL:
        return None if isinstance(value, bool) else "must be true or false"
    if value is None and kind in (_OPTINT, _OPTPIN, _OPTSTR, _OPTFILE):
        return None
    if kind in (_INT, _OPTINT, _PIN, _OPTPIN):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if value < extra[0] or value > extra[1]:
            return "must be between %d and %d, got %d" % (extra[0], extra[1], value)
        if kind == _PIN or kind == _OPTPIN:
            c = _GPIO[value]
            if c == 120:  # x
                return "GPIO %d does not exist on the ESP32" % value
            if c == 102:  # f
                return "GPIO 6-11 are wired to the ESP32's flash chip; using one stops the board"
            if c == 105 and name == "status_led_pin":  # i
                return "GPIO 34-39 are input only: they cannot drive an LED"
        return None
    if kind == _CHOICE:
        if value not in extra:
            return "must be one of %s" % ", ".join(extra)
        return None
    # A text: firmware/utf8.py's rules (valid UTF-8, no control or invisible characters, the
    # length, not blank), then those of its kind.
    why = utf8.error(value, (extra[0], extra[1], 1 if kind == _KEY else
                             2 if kind == _TOPIC or kind == _BYTESTR else 0))
    if why is not None:
        return why
    raw = value.encode()
    if kind == _KEY:
        # ThingsBoard acknowledges the PUBLISH, then drops a key its KvUtils refuses: HTML
        # markup (here: any "<"; ThingsBoard runs an HTML sanitizer) or a "{{...}}" template.
        if 60 in raw or 0 <= raw.find(b"{{") < raw.rfind(b"}}") - 1:
            return "ThingsBoard drops attribute keys with '<' or '{{...}}' (docs/thingsboard.md)"
    elif kind == _TOPIC:
        if 43 in raw or 35 in raw:
            return "must not contain the MQTT wildcards + and #"
        if raw[0] == 36:
            return "must not start with '$' (reserved for the server's own topics)"
    elif kind == _OPTFILE:
        for b in raw:
            if not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"-./_"):
                return "use letters, digits, '-', '.', '_' and '/' only"
    return None


def validate(raw, warnings=None):
    """Check a decoded config.json object. Returns (config dict with defaults filled, errors);
    the fields FIELDS marks required=None are in the dict only when the file gives them.

    errors is a list of one-line messages, each naming its field, sorted; config is only
    meaningful when errors is empty. Warnings (valid, but probably not what was meant) are
    appended to `warnings` when a list is given.
    """
    if not isinstance(raw, dict):
        return None, ["the file must hold a JSON object ({...})"]
    errors = []
    bad = []  # fields with an error of their own: the cross-field checks leave them out
    cfg = {}
    for name in raw:
        if name not in FIELDS:
            errors.append("%s: unknown field (typo?)" % escape(name))
    for name, spec in FIELDS.items():
        if name not in raw or spec[2] is None and raw[name] is None:
            if spec[2]:
                errors.append("%s: required" % name)
                bad.append(name)
            if spec[2] is not None:
                cfg[name] = spec[1]
            continue
        value = raw[name]
        if name == "cups":
            why = utf8.error(value, (1, 64, 0))
            if why is None:
                # Accept the printed form "es 1234-5678 ..." and store the compact one,
                # upper-cased as ASCII only (str.upper() knows Unicode on CPython only).
                value = bytearray(value.replace(" ", "").replace("-", "").encode())
                for i in range(len(value)):
                    if 97 <= value[i] <= 122:
                        value[i] -= 32
                value = value.decode()
                why = cups_error(value)
        else:
            why = _check(name, spec, value)
        if why is not None:
            errors.append("%s: %s" % (name, why))
            bad.append(name)
        cfg[name] = value
    if warnings is None:
        warnings = []

    # The cross-field checks run whatever the per-field checks said, over the fields that
    # passed them (not in bad), so that one round of fixes is enough.
    if "tb_tls" not in bad and "tb_plain_ok" not in bad and not cfg["tb_tls"] \
            and not cfg["tb_plain_ok"]:
        errors.append("tb_tls: false sends tokens and keys in clear text; "
                      "set tb_plain_ok to true to allow it")
    if "tb_tls" not in bad and "tb_ca" not in bad and cfg["tb_tls"] and cfg["tb_ca"] is None:
        errors.append("tb_ca: required when tb_tls is true (the server certificate is always verified)")
    if "retry_min_s" not in bad and "retry_max_s" not in bad \
            and cfg["retry_min_s"] > cfg["retry_max_s"]:
        errors.append("retry_min_s: must not exceed retry_max_s")
    if "attr_supplier_key" not in bad and "attr_cups_key" not in bad \
            and cfg["attr_supplier_key"] == cfg["attr_cups_key"]:
        errors.append("attr_cups_key: must differ from attr_supplier_key")
    if "telemetry_topic" not in bad and "attributes_topic" not in bad \
            and cfg.get("telemetry_topic", FIELDS["telemetry_topic"][1]) == \
            cfg.get("attributes_topic", FIELDS["attributes_topic"][1]):
        # ThingsBoard tries the attributes topic first: telemetry would be stored as attributes.
        errors.append("attributes_topic: must differ from telemetry_topic")
    wp = cfg["wifi_password"]
    if "wifi_password" not in bad and wp and len(wp.encode()) < 8:
        errors.append("wifi_password: must be empty (open network) or 8 to 63 characters")

    pins = [cfg[k] for k in ("pulse_pin", "status_led_pin", "boot_button_pin")
            if k not in bad and cfg[k] is not None]
    if len(pins) != len(set(pins)):
        errors.append("pulse_pin: pulse_pin, status_led_pin and boot_button_pin must differ")
    pin = cfg["pulse_pin"]
    c = _GPIO[pin] if "pulse_pin" not in bad else 0
    if c == 105 and "pulse_pull_up" not in bad and cfg["pulse_pull_up"]:  # i
        errors.append("pulse_pull_up: GPIO 34-39 have no internal pull-up; set pulse_pull_up "
                      "to false and fit an external pull-up resistor (e.g. 10 kOhm to 3V3)")
    if c == 115:  # s
        warnings.append("pulse_pin: GPIO %d is a strapping pin, read at power-up: a meter output "
                        "holding it high or low then can keep the board from starting; "
                        "prefer GPIO 4, 13, 14, 16-19, 21-23, 25-27, 32 or 33" % pin)
    for k in ("pulse_pin", "status_led_pin"):
        if k not in bad and cfg[k] is not None and _GPIO[cfg[k]] == 117:  # u
            warnings.append("%s: GPIO %d is the serial console (TX 1, RX 3): the console log "
                            "and make deploy/status stop working" % (k, cfg[k]))
    pin = cfg["boot_button_pin"]
    if "boot_button_pin" not in bad and pin is not None and _GPIO[pin] == 105:
        warnings.append("boot_button_pin: GPIO 34-39 have no internal pull-up: "
                        "the button needs an external pull-up resistor")
    # The setup access point: a WPA2 passphrase is 8 to 63 printable ASCII characters (IEEE
    # 802.11i); a first Wi-Fi check must have had its 30 s (firmware/supervisor.py).
    sp = cfg["setup_password"]
    if "setup_password" not in bad and sp is not None and [b for b in sp.encode() if b > 126]:
        errors.append("setup_password: must be printable ASCII (a WPA2 passphrase)")
    if "setup_after_s" not in bad and 0 < cfg["setup_after_s"] < 30:
        errors.append("setup_after_s: must be 0 (never by itself) or at least 30")

    for k in ("device_name", "access_token", "mqtt_client_id", "mqtt_username"):
        if k not in bad and cfg.get(k) == "provision":
            errors.append("%s: 'provision' is reserved by ThingsBoard" % k)
    sk = cfg["supplier_key"]
    if "supplier_key" not in bad and sk is not None and (b"<" in sk.encode() or b"{{" in sk.encode()):
        warnings.append("supplier_key: a ThingsBoard with attribute value checks turned on "
                        "(SQL_ATTRIBUTES_VALUE_NO_XSS_VALIDATION) drops values with '<' "
                        "or '{{...}}' (docs/thingsboard.md)")

    # Credentials: either provision (provision_key and provision_secret, perhaps offering
    # access_token), or ready credentials used as they are and never provisioned: access_token
    # alone (ThingsBoard's ACCESS_TOKEN), or the mqtt_* fields (MQTT_BASIC). ThingsBoard's
    # rules for MQTT_BASIC (DeviceCredentialsServiceImpl): a client id or a user name, and no
    # password without a user name.
    key, secret = cfg["provision_key"], cfg["provision_secret"]
    basic = [k for k in ("mqtt_client_id", "mqtt_username", "mqtt_password") if k in cfg]
    if [k for k in ("provision_key", "provision_secret", "access_token", "mqtt_client_id",
                    "mqtt_username", "mqtt_password") if k in bad]:
        pass  # one of them is wrong already: no verdict on the combination
    elif basic:
        if cfg["access_token"] is not None:
            errors.append("access_token: give either access_token or the mqtt_* fields "
                          "(MQTT_BASIC), not both")
        if key is not None or secret is not None:
            errors.append("%s: MQTT_BASIC credentials are used as they are, without "
                          "provisioning: remove provision_key and provision_secret" % basic[0])
        if "mqtt_username" not in cfg:
            if "mqtt_client_id" not in cfg:
                errors.append("mqtt_password: needs mqtt_username (MQTT_BASIC takes a client id, "
                              "a user name, or both)")
            elif "mqtt_password" in cfg:
                errors.append("mqtt_password: ThingsBoard refuses a password with a client id "
                              "alone; add mqtt_username")
    elif key is None and secret is None:
        if cfg["access_token"] is None:
            errors.append("provision_key: required (with provision_secret), unless the config "
                          "holds ready credentials: access_token, or mqtt_client_id/mqtt_username")
    elif key is None:
        errors.append("provision_key: required with provision_secret")
    elif secret is None:
        errors.append("provision_secret: required with provision_key")

    if not errors and key is None:
        # Ready credentials: cfg["credentials"] is the record the meter connects with as it is,
        # never provisioning (firmware/supervisor.py; the shapes of firmware/credentials.py).
        # Made here, so that on the meter this code runs at boot and is not kept resident.
        # MQTT_BASIC: an absent field is empty (credentials.connect_params then gives the
        # device name as client id; ThingsBoard also matches the user name alone, §1).
        tok = cfg["access_token"]
        cfg["credentials"] = {"type": "ACCESS_TOKEN", "token": tok} if tok is not None else {
            "type": "MQTT_BASIC", "clientId": cfg.get("mqtt_client_id") or "",
            "userName": cfg.get("mqtt_username") or "", "password": cfg.get("mqtt_password") or ""}
    if "tb_port" not in bad and "tb_tls" not in bad and cfg["tb_port"] is None:
        cfg["tb_port"] = 8883 if cfg["tb_tls"] else 1883
    errors.sort()
    warnings.sort()
    return cfg, errors
