# config.json as a file: whatever its bytes, one clear error naming the file (and the line,
# column and field where there is one), never an exception. Runs on CPython (pytest) and on the
# MicroPython Unix port (run.py): the verdicts must be the same on both.

import json

from support import fresh_dir

from firmware import config
from firmware.cups import check_letters

CUPS = "ES0021000000012345" + check_letters("0021000000012345")
GOOD = {"wifi_ssid": "meters", "wifi_password": "wifi-pass-1234", "provision_key": "k" * 20,
        "provision_secret": "s" * 20, "supplier_key": "supplier-secret-0001", "cups": CUPS,
        "pulse_pin": 4}


def good_bytes():
    # In a fixed order (MicroPython's dicts have their own), one field per line.
    return ("{\n" + ",\n".join('  "%s": %s' % (k, json.dumps(GOOD[k])) for k in sorted(GOOD))
            + "\n}\n").encode()


def errors_of(data):
    cfg, errors = config.parse(data)
    assert isinstance(errors, list) and errors, data[:60]
    return errors


def one_error(data):
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def test_the_good_file_is_valid_in_every_form():
    for data in (good_bytes(), good_bytes().decode(), json.dumps(GOOD).encode()):
        cfg, errors = config.parse(data)
        assert errors == [] and cfg["cups"] == CUPS


def test_encodings_a_person_or_a_flash_chip_may_produce():
    g = good_bytes()
    assert one_error(b"") == "config.json: empty"
    assert one_error(b" \n\t ") == "config.json: line 2, column 3: the file ends too early"
    assert one_error(b"\xef\xbb\xbf" + g) == \
        "config.json: starts with a byte-order mark: save it as UTF-8 without BOM"
    utf16 = b"".join(bytes((b, 0)) for b in g)
    assert one_error(b"\xff\xfe" + utf16) == "config.json: UTF-16 text: save it as UTF-8"
    assert one_error(utf16) == "config.json: UTF-16 text: save it as UTF-8"
    assert one_error(b"\xff" * 4096) == "config.json: starts with 0xFF bytes: erased or corrupt flash"
    assert one_error(g[:40] + b"\xff" * 100) == "config.json: line 3, column 5: not valid UTF-8"
    assert one_error(g.replace(b'"meters"', b'"met\xffers"')) == \
        "config.json: line 8, column 20: not valid UTF-8 (field wifi_ssid)"
    # A file cut short by a power cut during a copy.
    assert one_error(g[:50]).startswith("config.json: line 3, column")


def test_utf8_must_be_valid_and_in_its_shortest_form():
    for seq in (b"\xc0\xae", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",  # overlong
                b"\xed\xa0\x80", b"\xed\xbf\xbf",  # surrogates
                b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",  # > U+10FFFF
                b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xe2\x28\xa1"):  # stray, cut short
        data = b'{"device_name": "m' + seq + b'x"}'
        assert one_error(data) == \
            "config.json: line 1, column 19: not valid UTF-8 (field device_name)", seq
    for seq in (b"\xc2\x80"[:0] + b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
                b"\xf4\x8f\xbf\xbd"):
        cfg, errors = config.parse(b'{"device_name": "m' + seq + b'x"}')
        assert not [e for e in errors if "UTF-8" in e], (seq, errors)


def test_only_strict_json_is_accepted_as_both_runtimes_would_read_it_differently():
    # Each of these is read by MicroPython's json.loads (some silently changed: "\x41" becomes
    # "x41"), and refused by CPython's: the meter and the tool must agree, so all are refused.
    cases = {
        b'{"device_name": "m",}': "line 1, column 21: expected a field name in double quotes",
        b'{"device_name" "m"}': "line 1, column 16: expected ':' after the field name "
                                "(field device_name)",
        b'{"device_name": "m" "cups": 1}': "line 1, column 21: expected ',' or '}' (a missing "
                                           "comma?) (field device_name)",
        b'{"pulse_pin": 04}': "line 1, column 15: not a valid JSON number (field pulse_pin)",
        b'{"pulse_pin": 4.}': "line 1, column 15: not a valid JSON number (field pulse_pin)",
        b'{"pulse_pin": -}': "line 1, column 15: not a valid JSON number (field pulse_pin)",
        b'{"pulse_pin": NaN}': "line 1, column 15: expected a value (field pulse_pin)",
        b'{"pulse_pin": Infinity}': "line 1, column 15: expected a value (field pulse_pin)",
        b'{"pulse_pin": tru}': "line 1, column 15: expected a value (field pulse_pin)",
        b'{"pulse_pin": truex}': "line 1, column 19: expected ',' or '}' (a missing comma?) "
                                 "(field pulse_pin)",
        b"{'pulse_pin': 4}": "line 1, column 2: expected a field name in double quotes",
        b'{"device_name": "\\x41"}': "line 1, column 18: bad escape (JSON has \\\" \\\\ \\/ \\b "
                                    "\\f \\n \\r \\t \\uXXXX) (field device_name)",
        b'{"device_name": "a\tb"}': "line 1, column 19: a control character inside a string "
                                   "(write it as \\n, \\t or \\uXXXX) (field device_name)",
        b'{"device_name": "\\u12G4"}': "line 1, column 18: bad \\u escape (four hex digits) "
                                      "(field device_name)",
        b'{"device_name": "\\ud83d\\ude00"}': "line 1, column 18: \\u escape of a UTF-16 "
                                             "surrogate: write the character itself (field "
                                             "device_name)",
        b'{"pulse_pin": 4} {}': "line 1, column 18: unexpected text after the end",
        b'{"pulse_pin": [1, 2,, 3]}': "line 1, column 21: expected a value (field pulse_pin)",
        b'{"pulse_pin": [1, 2]]}': "line 1, column 21: expected ',' or '}' (a missing comma?) "
                                   "(field pulse_pin)",
        b'{"device_name": "abc': "line 1, column 21: the file ends inside a string (field "
                                 "device_name)",
        b'{"pulse_pin": ' + b"9" * 33 + b"}": "line 1, column 15: a number longer than 32 "
                                              "characters (field pulse_pin)",
    }
    for data, why in cases.items():
        assert one_error(data) == "config.json: " + why, (data, one_error(data))
    # What strict JSON allows is allowed: escapes, exponents, whitespace, "-0".
    cfg, errors = config.parse(b' {"device_name" : "\\u006d\\/\\"1\\"" ,\r\n "pulse_pin": -0,'
                               b' "pulses_per_kwh": 1E3}\n')
    assert "device_name: must not contain control characters" not in errors
    assert cfg["device_name"] == 'm/"1"' and cfg["pulse_pin"] == 0
    assert "pulses_per_kwh: must be an integer" in errors  # 1E3 is a float in JSON


def test_huge_values_files_arrays_and_nesting_are_refused_before_parsing():
    big = json.dumps(dict(GOOD, supplier_key="s" * 30000)).encode()
    assert one_error(big) == "config.json: larger than 8192 bytes"
    many = b'{"pulse_pin": [' + b"1," * 600 + b"1]}"
    assert one_error(many) == "config.json: line 1, column 1036: more than 512 values " \
                              "(field pulse_pin)"
    deep = b'{"pulse_pin": ' + b"[" * 4000 + b"]" * 4000 + b"}"
    assert one_error(deep) == "config.json: line 1, column 22: nested deeper than 8 levels " \
                              "(field pulse_pin)"
    assert one_error(b"[" * 8000) == "config.json: line 1, column 9: nested deeper than 8 levels"
    # Within the limits, the value is simply of the wrong type.
    nested = json.dumps(dict(GOOD, pulse_pin=[[[[[[[1]]]]]]])).encode()
    assert errors_of(nested) == ["pulse_pin: must be an integer"]
    assert errors_of(json.dumps(dict(GOOD, wifi_ssid="x" * 5000)).encode()) == [
        "wifi_ssid: must be 1 to 32 bytes (UTF-8), got 5000"]


def test_a_field_given_twice_is_named():
    g = good_bytes()
    assert one_error(g.replace(b"{\n", b'{\n  "pulse_pin": 5,\n', 1)) == \
        "config.json: field pulse_pin given twice (only the last would count)"
    assert one_error(b'{"pulse\\u005fpin": 5, "pulse_pin": 4}') == \
        "config.json: field pulse_pin given twice (only the last would count)"
    # Not the same field in nested objects (they are errors of their own, not duplicates).
    assert errors_of(b'{"pulse_pin": {"a": 1}, "cups": {"a": 2}}')[0] == "cups: must be a string"


def test_the_top_level_must_be_an_object():
    for data in (b"[]", b"4", b'"x"', b"null", b"true"):
        assert errors_of(data) == ["the file must hold a JSON object ({...})"], data


def test_load_reads_with_a_size_limit_and_names_a_missing_file():
    fresh_dir()
    cfg, errors = config.load("config.json")
    assert cfg is None and errors == ["config.json: no such file"]
    with open("config.json", "wb") as f:
        f.write(good_bytes())
    cfg, errors = config.load()
    assert errors == [] and cfg["pulse_pin"] == 4
    with open("config.json", "wb") as f:
        f.write(b'{"x": "' + b"y" * 100000 + b'"}')
    assert config.load() == (None, ["config.json: larger than 8192 bytes"])
    warnings = []
    with open("other.json", "wb") as f:
        f.write(json.dumps(dict(GOOD, pulse_pin=12)).encode())
    cfg, errors = config.load("other.json", warnings)
    assert errors == [] and len(warnings) == 1 and warnings[0].startswith("pulse_pin: GPIO 12")
    with open("bad.json", "wb") as f:
        f.write(b"{,}")
    assert config.load("bad.json")[1] == [
        "bad.json: line 1, column 2: expected a field name in double quotes"]
