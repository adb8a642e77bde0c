"""ThingsBoard's JSON reading: Gson's lenient parser, value typing and the device payload shapes.

Two kinds of failure matter, because ThingsBoard treats them differently (docs/thingsboard.md §5):
  * Invalid  - an AdaptorException in TB (bad JSON, wrong shape): close, or PUBACK-and-drop when the
               profile's "send PUBACK on validation failure" option is on and QoS >= 1;
  * Crash    - an uncaught runtime exception in TB (ts that is not a number, NaN value, missing RPC
               method): the connection is closed whatever the option says.
The exact Java exception class decides which one applies, so the helpers below follow Gson's
getAsString/getAsLong rules (a one-element array reads as its element, null throws, ...).
"""
import decimal
import json
import math


class Invalid(Exception):
    """TB AdaptorException (validation failure)."""


class Crash(Exception):
    """TB runtime exception escaping the adaptor: connection closed regardless of profile options."""


class JNum:
    """A JSON number kept as its source text, as Gson's LazilyParsedNumber does."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"JNum({self.text})"


# ---- parsing ---------------------------------------------------------------------------------------

def _strict(text):
    # NaN, Infinity and -Infinity are not numbers to Gson: its JsonReader reads them as unquoted
    # strings (peekNumber does not know them, so they become PEEKED_UNQUOTED, a STRING token), and
    # JsonElementTypeAdapter makes a string JsonPrimitive of them.
    return json.loads(text, parse_int=JNum, parse_float=JNum, parse_constant=str, strict=False)


def parse(text):
    """Parse like Gson's JsonParser.parseString: lenient, and "" (or only whitespace) is JSON null.

    Returns dict / list / str / JNum / bool / None. Raises Invalid (Gson's JsonSyntaxException).
    """
    stripped = text.lstrip(" \t\r\n")
    if stripped.startswith(_NON_EXECUTE_PREFIX):
        # JsonReader.consumeNonExecutePrefix: a lenient reader skips ")]}'\n" before the document.
        text = stripped[len(_NON_EXECUTE_PREFIX):]
    try:
        return _strict(text)
    except (ValueError, RecursionError):
        pass
    try:
        return _Lenient(text).document()
    except RecursionError:
        raise Invalid("nesting too deep") from None


_LITERAL_END = set("/\\;#=:{}[], \t\f\r\n")
_NON_EXECUTE_PREFIX = ")]}'\n"


class _Lenient:
    """The parts of Gson's lenient mode that real payloads hit: unquoted and single-quoted names and
    strings, '=' / '=>' and ';' separators, comments, NaN/Infinity, case-insensitive true/false/null,
    omitted array elements (read as null). Anything after the first value is an error, as in Gson."""

    def __init__(self, text):
        self.s = text
        self.i = 0

    def fail(self, what):
        raise Invalid(f"{what} at {self.i}")

    def skip(self):
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#" or s.startswith("//", self.i):
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end + 1
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    self.fail("unterminated comment")
                self.i = end + 2
            else:
                return

    def peek(self):
        self.skip()
        return self.s[self.i] if self.i < len(self.s) else ""

    def document(self):
        if self.peek() == "":
            return None
        value = self.value()
        # JsonParser.parseReader only insists on the end of the document after a non-null value:
        # "null garbage" is JSON null.
        if value is not None and self.peek() != "":
            self.fail("did not consume the entire document")
        return value

    def value(self):
        c = self.peek()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c in "\"'":
            return self.quoted(c)
        if c == "" or c in "}],:;=":
            self.fail("expected value")
        return self.literal()

    def obj(self):
        self.i += 1
        out = {}
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            c = self.peek()
            if c in "\"'":
                name = self.quoted(c)
            elif c == "" or c in "{}[],:;=":
                self.fail("expected name")
            else:
                name = self.raw_literal()
            c = self.peek()
            if c == ":":
                self.i += 1
            elif c == "=":
                self.i += 1
                if self.s.startswith(">", self.i):
                    self.i += 1
            else:
                self.fail("expected ':'")
            out[name] = self.value()
            c = self.peek()
            if c in ",;":
                self.i += 1
            elif c == "}":
                self.i += 1
                return out
            else:
                self.fail("unterminated object")

    def arr(self):
        self.i += 1
        out = []
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            c = self.peek()
            if c in ",;":
                out.append(None)           # lenient: an omitted element reads as null
            elif c == "]":
                out.append(None)
                self.i += 1
                return out
            else:
                out.append(self.value())
            c = self.peek()
            if c in ",;":
                self.i += 1
                if self.peek() == "]":
                    out.append(None)
                    self.i += 1
                    return out
            elif c == "]":
                self.i += 1
                return out
            else:
                self.fail("unterminated array")

    def quoted(self, quote):
        s, n = self.s, len(self.s)
        self.i += 1
        out = []
        while True:
            if self.i >= n:
                self.fail("unterminated string")
            c = s[self.i]
            self.i += 1
            if c == quote:
                return "".join(out)
            if c != "\\":
                out.append(c)
                continue
            if self.i >= n:
                self.fail("unterminated escape")
            e = s[self.i]
            self.i += 1
            if e == "u":
                hexdigits = s[self.i:self.i + 4]
                if len(hexdigits) < 4 or any(h not in "0123456789abcdefABCDEF" for h in hexdigits):
                    self.fail("malformed \\u escape")
                out.append(chr(int(hexdigits, 16)))
                self.i += 4
            elif e in "\"'\\/\n":
                out.append(e)
            else:
                mapped = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f"}.get(e)
                if mapped is None:
                    self.fail("invalid escape")
                out.append(mapped)

    def raw_literal(self):
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _LITERAL_END:
            self.i += 1
        if self.i == start:
            self.fail("expected literal")
        return self.s[start:self.i]

    def literal(self):
        token = self.raw_literal()
        low = token.lower()
        if low == "true":
            return True
        if low == "false":
            return False
        if low == "null":
            return None
        if _is_json_number(token):
            return JNum(token)
        return token                               # NaN and Infinity included: strings to Gson


def _is_json_number(token):
    t = token[1:] if token.startswith("-") else token
    if not t or not t[0].isdigit() or not t.isascii():
        return False
    if t[0] == "0" and len(t) > 1 and t[1].isdigit():
        return False
    try:
        float(t)
    except ValueError:
        return False
    return "_" not in t and t[-1].isdigit()


# ---- Gson accessors --------------------------------------------------------------------------------

def as_string(value):
    """JsonElement.getAsString: Crash for null/object, Invalid for an array that is not one element."""
    if isinstance(value, str):
        return value
    if isinstance(value, JNum):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if len(value) != 1:
            raise Invalid("array is not a single element")      # IllegalStateException
        return as_string(value[0])
    raise Crash("getAsString on JSON null or object")            # UnsupportedOperationException


def _java_parse_long(text):
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isdecimal():
        raise Crash(f"NumberFormatException: {text!r}")
    value = int(text)
    if not -2**63 <= value < 2**63:
        raise Crash(f"NumberFormatException (range): {text!r}")
    return value


def java_parse_int(text):
    """Integer.parseInt: optional sign, decimal digits, 32-bit range; ValueError otherwise."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isdecimal():
        raise ValueError(text)
    value = int(text)
    if not -2**31 <= value < 2**31:
        raise ValueError(text)
    return value


_CTX = decimal.Context(prec=100000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_MAX_EXPONENT = 4000          # beyond this we refuse to expand digits (see README, limits)


def as_long(value):
    """JsonElement.getAsLong as used for a telemetry "ts"."""
    if isinstance(value, JNum):
        try:
            return _java_parse_long(value.text)
        except Crash:
            pass
        try:
            d = _CTX.create_decimal(value.text)
        except decimal.InvalidOperation:
            raise Crash("NumberFormatException") from None
        if not d.is_finite() or abs(d.adjusted()) > _MAX_EXPONENT:
            raise Crash("NumberFormatException")
        # BigDecimal.longValue(): truncate toward zero and keep the low 64 bits.
        n = int(d) & (2**64 - 1)
        return n - 2**64 if n >= 2**63 else n
    if isinstance(value, str):
        return _java_parse_long(value)
    if isinstance(value, bool):
        raise Crash("NumberFormatException: boolean ts")
    if isinstance(value, list):
        if len(value) != 1:
            raise Invalid("array is not a single element")
        return as_long(value[0])
    raise Crash("getAsLong on JSON null or object")


def as_object(value):
    if not isinstance(value, dict):
        raise Invalid("not a JSON object")                        # IllegalStateException
    return value


def to_python(value):
    """Plain Python value of a parsed element (numbers as int/float), for storage and re-encoding."""
    if isinstance(value, JNum):
        t = value.text
        try:
            return int(t)
        except ValueError:
            return float(t)
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


# ---- value typing (JsonConverter.parseProtoValues / buildNumericKeyValueProto) -----------------------

def _is_parsable(s):
    """commons-lang3 NumberUtils.isParsable: [-]digits[.digits], no exponent, no trailing '.'."""
    if not s or s.endswith("."):
        return False
    body = s[1:] if s[0] == "-" else s
    if not body:
        return False
    if body.count(".") > 1:
        return False
    return all(ch == "." or ch.isdecimal() for ch in body)


def _numeric(text):
    """LONG (int), DOUBLE (float) or STRING (str) exactly as TB types a number given as text."""
    try:
        d = _CTX.create_decimal(text)
    except decimal.InvalidOperation:
        raise Crash(f"NumberFormatException: {text!r}") from None
    if not d.is_finite():
        raise Crash(f"NumberFormatException: {text!r}")             # BigDecimal("NaN") throws
    if abs(d.adjusted()) > _MAX_EXPONENT:
        return text
    simple_double = "." in text and "e" not in text and "E" not in text
    stripped = _CTX.normalize(d) if d else decimal.Decimal(0)
    if -stripped.as_tuple().exponent <= 0 and not simple_double:
        n = int(d)
        if -2**63 <= n < 2**63:
            return n
        return format(d, "f")                                       # type cast on: big integer as text
    if -d.as_tuple().exponent <= 16:
        return float(d)
    return format(d, "f")


def typed_values(obj):
    """The key/value list TB stores for one JSON object of telemetry or attributes (JSON null skipped)."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, str):
            if _is_parsable(value):
                try:
                    out[key] = _numeric(value)
                except Crash:
                    out[key] = value
            else:
                out[key] = value
        elif isinstance(value, JNum):
            out[key] = _numeric(value.text)
        elif isinstance(value, (dict, list)):
            out[key] = to_python(value)                             # JSON_V
        # None: silently skipped
    return out


def rest_attribute_values(text):
    """The attributes an administrator's REST call stores, typed as TelemetryController's
    extractRequestAttributes types them: by Jackson's node type, with no numeric-string cast
    (that cast is the device path's, JsonConverter). A number with a fraction or an exponent is a
    DOUBLE (`1e3` is pushed as `1000.0`), an integral one a LONG, a string stays a STRING ("30"
    stays "30"), objects and arrays are JSON, a null is dropped. Raises ValueError with the
    controller's message (HTTP 400)."""
    def refuse_constant(name):
        raise ValueError(f"Non-standard token '{name}'")           # Jackson's default refuses NaN

    def integral(digits):
        n = int(digits)
        if not -2**63 <= n < 2**63:
            raise ValueError("Big integer values are not supported!")
        return n

    try:
        obj = json.loads(text, parse_constant=refuse_constant, parse_int=integral)
    except ValueError as e:
        if "Big integer" in str(e):
            raise
        raise ValueError(f"Invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("Request is not a JSON object")
    values = {k: v for k, v in obj.items() if v is not None}
    if not values:
        raise ValueError("No attributes data found in request body!")
    if any(not k.strip() for k in values):
        raise ValueError("Key cannot be empty or contains only spaces")
    return values


def telemetry_entries(payload, server_ts_ms):
    """Decode a telemetry payload into [(ts_ms, {key: value})], one entry per JSON object.

    Accepted shapes (§3): {k: v}, {"ts": ms, "values": {...}} (ts only when both keys exist), or an
    array of those. Raises Invalid or Crash.
    """
    root = parse(payload.decode("utf-8", "replace"))
    if isinstance(root, dict):
        items = [root]
    elif isinstance(root, list):
        items = root
    else:
        raise Invalid("telemetry is not an object or array")
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise Invalid("array element is not an object")
        if "ts" in item and "values" in item:
            ts = as_long(item["ts"])                  # parsed before values, as TB does
            entries.append((ts, typed_values(as_object(item["values"]))))
        else:
            entries.append((server_ts_ms, typed_values(item)))
    return entries


def attribute_values(payload):
    root = parse(payload.decode("utf-8", "replace"))
    if not isinstance(root, dict):
        raise Invalid("attributes must be a JSON object")
    return typed_values(root)


def attribute_request(request_id_text, payload):
    """(request_id, client_keys or None, shared_keys or None); every failure is Invalid here because TB
    wraps any RuntimeException of this path into an AdaptorException."""
    try:
        request_id = java_parse_int(request_id_text)
        root = as_object(parse(payload.decode("utf-8", "replace")))
        keys = []
        for name in ("clientKeys", "sharedKeys"):
            if name in root:
                keys.append({k.strip() for k in as_string(root[name]).split(",") if k.strip()})
            else:
                keys.append(None)
    except (Invalid, Crash, ValueError) as e:
        raise Invalid(str(e)) from None
    return request_id, keys[0], keys[1]


def server_rpc_request(request_id_text, payload):
    """(request_id, method, params) of a device->server RPC; missing method is a Crash (NPE in TB)."""
    try:
        request_id = java_parse_int(request_id_text)
    except ValueError:
        raise Crash("NumberFormatException in request id") from None
    obj = as_object(parse(payload.decode("utf-8", "replace")))
    if "method" not in obj:
        raise Crash("NullPointerException: no method")
    method = as_string(obj["method"])
    params = to_python(obj.get("params"))
    return request_id, method, params


# ---- encoding as ThingsBoard writes JSON to devices --------------------------------------------------

def java_double(x):
    """Double.toString: plain between 1e-3 and 1e7, else d.dddE[-]n; always a fractional digit."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    # repr() is the shortest round-tripping form, which is what Double.toString prints since JDK 19.
    _, raw_digits, exp = decimal.Decimal(repr(abs(x))).as_tuple()
    raw = "".join(map(str, raw_digits))
    exp10 = len(raw) + exp - 1                       # power of ten of the first digit
    digits = raw.rstrip("0") or "0"
    if 1e-3 <= abs(x) < 1e7:
        if exp10 >= 0:
            whole = digits[:exp10 + 1].ljust(exp10 + 1, "0")
            frac = digits[exp10 + 1:] or "0"
        else:
            whole = "0"
            frac = "0" * (-exp10 - 1) + digits
        return f"{sign}{whole}.{frac}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exp10}"


def _escape(s):
    return json.dumps(s, ensure_ascii=False)


def to_json(value):
    """Compact JSON as Gson's JsonElement.toString() writes it (doubles in Java notation)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, dict):
        return "{" + ",".join(_escape(str(k)) + ":" + to_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, JNum):
        return value.text
    raise TypeError(f"cannot encode {type(value).__name__}")
