# CUPS (Código Universal del Punto de Suministro) validation.
# Shared by the firmware (boot-time config check) and tools/ (config generator): one rule, one place.
#
# Format: "ES" + 16 digits (4-digit distributor + 12-digit supply point) + 2 check letters,
# optionally followed by 2 characters (border-point digit + type letter, e.g. "0F", "1P").
# Check letters: r = int(16 digits) mod 529; (q, m) = divmod(r, 23); letters = T[q] + T[m]
# with T the Spanish DNI table below (arthurdejong/python-stdnum : stdnum/es/cups.py).

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the host tools share this module (tools/meterconfig.py)
    def const(value):
        return value

_TABLE = const("TRWAGMYFPDXBNJZSQVHLCKE")
_TYPES = const("FPRCXYZ")
_TYPES_BYTES = const(b"FPRCXYZ")


# Strings are handled as bytes and slices, never iterated or indexed as str: that makes
# one-character strings, which MicroPython interns for good (main.py: the interned-name table
# must not grow).


def check_letters(digits):
    # Reduce digit by digit: the 16-digit number is a big int on ESP32 (small ints are 31-bit)
    # and this keeps the work allocation-free.
    r = 0
    for b in digits.encode():
        r = (r * 10 + b - 48) % 529
    q, m = divmod(r, 23)
    return _TABLE[q:q + 1] + _TABLE[m:m + 1]


def cups_error(value):
    """Return None when value is a valid CUPS, else a short reason (no trailing period)."""
    if not isinstance(value, str):
        return "must be a string"
    n = len(value)
    if n not in (20, 22):
        return "must be 20 or 22 characters (ES + 16 digits + 2 check letters [+ 2]), got %d" % n
    if value[:2] != "ES":
        return "must start with ES"
    try:
        raw = value.encode()
    except UnicodeError:  # CPython: a lone surrogate
        raw = b""
    if len(raw) != n:
        return "must be ASCII"
    digits = value[2:18]
    for b in raw[2:18]:
        if b < 48 or b > 57:
            return "characters 3-18 must be digits"
    want = check_letters(digits)
    for b in raw[18:20]:
        if b < 65 or b > 90:  # not echoed: the got below is always two letters
            return "characters 19-20 should be the check letters %s for these digits" % want
    got = value[18:20]
    if got != want:
        return "check letters should be %s for these digits, got %s" % (want, got)
    if n == 22:
        if raw[20] < 48 or raw[20] > 57:
            return "character 21 (border point) must be a digit"
        if raw[21] not in _TYPES_BYTES:
            return "character 22 (type) must be one of %s" % _TYPES
    return None
