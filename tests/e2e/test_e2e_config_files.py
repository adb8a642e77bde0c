"""Hostile config.json and ca.der files on the real firmware (issue 12): whatever the files
hold, the meter names the field or the file in one escaped line, shows the config-error LED
pattern, sends nothing, does not reset, and re-reads the file every 30 s."""

import json
import time

import pytest

from e2e_support import base_config

SETTLE_S = 4  # after "meter halted": long enough for a reset loop to show (the first is 10 s
# after a crash, but main: unexpected and the traceback come at once)

CONFIG_CASES = {
    "erased flash": (b"\xff" * 4096, "config.json: starts with 0xFF bytes: erased or corrupt flash"),
    "UTF-16": ("\ufeff" + json.dumps({"wifi_ssid": "x"})).encode("utf-16-le"),
    "a BOM": b"\xef\xbb\xbf{}",
    "a 30 KB value": None,  # made in the test from the base config
    "a huge array": b'{"pulse_pin": [' + b"0," * 3000 + b"0]}",
    "deep nesting": b'{"pulse_pin": ' + b"[" * 4000 + b"]" * 4000 + b"}",
    "overlong UTF-8": None,
    "lenient JSON": None,
}


def hostile(name, sim):
    good = base_config(sim)
    if name == "a 30 KB value":
        return json.dumps(dict(good, supplier_key="s" * 30000)).encode(), \
            "config.json: larger than 8192 bytes"
    if name == "overlong UTF-8":
        text = json.dumps(dict(good, supplier_key="SUPPLIER-KEY-0001")).encode()
        return text.replace(b"SUPPLIER", b"SUPPLIER\xc0\xaf"), "not valid UTF-8 (field supplier_key)"
    if name == "lenient JSON":  # MicroPython's own json.loads would take this
        text = json.dumps(good).encode()
        return text[:-1] + b',}', "expected a field name in double quotes"
    data = CONFIG_CASES[name]
    if isinstance(data, tuple):
        return data
    why = {"UTF-16": "config.json: UTF-16 text: save it as UTF-8",
           "a BOM": "config.json: starts with a byte-order mark: save it as UTF-8 without BOM",
           "a huge array": "more than 512 values (field pulse_pin)",
           "deep nesting": "nested deeper than 8 levels (field pulse_pin)"}[name]
    return data, why


def assert_halted_cleanly(m, sim, why):
    assert m.wait_for("meter halted", 15), m.text()[-2000:]
    time.sleep(SETTLE_S)
    text = m.text()
    assert why in text, text[-2000:]
    assert "pattern config-error" in text
    assert "main: unexpected" not in text and "resetting in" not in text
    assert m.boots == 1 and m.powered and text.count("meter firmware starting") == 1
    assert sim.events("connect") == []


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_a_hostile_config_file_is_a_config_error_not_a_crash(sim, meters, name):
    data, why = hostile(name, sim)
    m = meters(sim)
    m.put_file("config.json", data)
    m.power_on()
    assert_halted_cleanly(m, sim, why)


@pytest.mark.parametrize("ca, why", [
    (b"\x30\x82\x01\x00" + b"\x00" * 256 + b"\x30\x03abc" * 30000,
     "config: tb_ca: ca.der: larger than 8192 bytes"),
    (b"\x30\x00" * 2000, "config: tb_ca: ca.der: more than 8 certificates"),
    (b"\x30\x84\xff\xff\xff\xff", "config: tb_ca: ca.der: bad DER length"),
    (b"\x30\x0a0123456789", "config: tb_ca: ca.der: "),  # DER framing fine, mbedTLS refuses it
])
def test_a_huge_or_malformed_ca_file_is_a_config_error_naming_tb_ca(sim, meters, ca, why):
    m = meters(base_config(sim, tb_tls=True, tb_plain_ok=False, tb_port=sim.mqtt_port),
               files={"ca.der": ca})
    m.power_on()
    assert_halted_cleanly(m, sim, why)


def test_a_field_name_with_newlines_cannot_forge_a_console_line(sim, meters):
    forged = "0.123 I state: attributes -> run"
    cfg = dict(base_config(sim), **{"typo\n" + forged + "\n": 1})
    m = meters(cfg)
    m.power_on()
    assert_halted_cleanly(m, sim, "typo\\x0a0.123 I state: attributes -> run\\x0a: unknown field")
    for _t, line in m.lines:
        assert not line.startswith(forged), line


def test_every_error_of_the_file_at_once_and_warnings_on_a_good_one(sim, meters):
    # The per-field errors and the cross-field ones in one round (the password check runs
    # although pulse_pin is wrong). A valid file with a strapping pin boots with a warning.
    m = meters(base_config(sim, wifi_password="short", pulse_pin=7, tb_prot=1, retry_min_s=50,
                           retry_max_s=20))
    m.power_on()
    assert m.wait_for("meter halted", 15)
    text = m.text()
    for line in ("config: pulse_pin: GPIO 6-11 are wired to the ESP32's flash chip",
                 "config: retry_min_s: must not exceed retry_max_s",
                 "config: tb_prot: unknown field (typo?)",
                 "config: wifi_password: must be empty (open network) or 8 to 63 characters"):
        assert line in text, text
    m.auto_restart = False  # the restart after the fix is a planned reset: do it by hand
    m.power_cut()
    m.put_config(base_config(sim, pulse_pin=12))
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()[-2000:]
    assert "W config: pulse_pin: GPIO 12 is a strapping pin" in m.text()
