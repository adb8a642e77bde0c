# Text checked over its UTF-8 bytes, the same on CPython and MicroPython (firmware/config.py
# says why: the two runtimes' decoders and str methods differ). Its own module so that setup
# mode checks a Wi-Fi network and password from the page with these rules without loading the
# whole validator, which takes 27 KB of heap on the 64-bit Unix port (README: benchmarks,
# setup mode). config.py and firmware/setup_wifi.py use it; tools/meterconfig.py through
# config.py.


def code_point(raw, index, n):
    """The code point of the UTF-8 sequence at raw[index], or -1 unless it is valid UTF-8 in
    its shortest form: no overlong encoding, no surrogate, nothing above U+10FFFF, no stray
    continuation byte. MicroPython's own decoder lets all of those through; CPython's does
    not: this is the one decoder both runtimes use."""
    b = raw[index]
    if b < 0x80:
        return b
    if b < 0xC2 or b > 0xF4:
        return -1
    k = 1 if b < 0xE0 else 2 if b < 0xF0 else 3
    if index + k >= n:
        return -1
    cp = b & (0x3F >> k)
    for j in range(index + 1, index + k + 1):
        c = raw[j]
        if c & 0xC0 != 0x80:
            return -1
        cp = (cp << 6) | (c & 0x3F)
    if (k == 2 and cp < 0x800) or (k == 3 and (cp < 0x10000 or cp > 0x10FFFF)) \
            or 0xD800 <= cp <= 0xDFFF:
        return -1
    return cp


def error(value, spec):
    """Why value is not a text of spec (lo, hi, measure): lo to hi characters (measure 0),
    UTF-16 units (1, as ThingsBoard counts) or bytes of UTF-8 (2, as MQTT and the Wi-Fi driver
    count); a str, valid UTF-8 in its shortest form, no control or invisible formatting
    characters, not blank unless lo is 0. None when it is one. (One tuple, not three
    arguments: each argument's name is interned for good, main.py.)"""
    lo, hi, measure = spec
    if not isinstance(value, str):
        return "must be a string"
    try:
        raw = value.encode()
    except UnicodeError:  # CPython: a lone surrogate (e.g. an undecodable byte in argv)
        return "must be valid UTF-8 text"
    n = len(raw)
    chars = units = i = 0
    blank = True
    while i < n:
        b = raw[i]
        cp = code_point(raw, i, n)
        if cp < 0:
            return "must be valid UTF-8 text"
        if cp < 32 or 127 <= cp <= 159:
            return "must not contain control characters"
        # Line and paragraph separators, bidirectional controls and marks, the BOM and the
        # non-characters: invisible, able to disguise a log line or the text itself, and
        # code points MQTT strings should not hold.
        if cp in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF) or 0x202A <= cp <= 0x202E \
                or 0x2066 <= cp <= 0x2069 or 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE:
            return "must not contain U+%04X (an invisible or non-character code point)" % cp
        if cp != 32:
            blank = False
        chars += 1
        units += 2 if cp > 0xFFFF else 1
        i += 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    unit = " characters"
    if measure == 1:
        chars, unit = units, " characters (UTF-16 units, as ThingsBoard counts them)"
    elif measure == 2:
        chars, unit = n, " bytes (UTF-8)"
    if chars < lo or chars > hi:
        if lo == hi:
            return "must be %d%s, got %d" % (lo, unit, chars)
        return "must be %d to %d%s, got %d" % (lo, hi, unit, chars)
    if lo > 0 and blank:
        return "must not be blank"
    return None
