import json

from firmware import config
from firmware.cups import check_letters

CUPS = "ES0021000000012345" + check_letters("0021000000012345")
GOOD = {"wifi_ssid": "meters", "wifi_password": "wifi-pass-1234", "provision_key": "k" * 20,
        "provision_secret": "s" * 20, "supplier_key": "supplier-secret-0001", "cups": CUPS,
        "pulse_pin": 4}


def _errors(**over):
    raw = dict(GOOD)
    for k, v in over.items():
        if v is config:
            del raw[k]
        else:
            raw[k] = v
    return config.validate(raw)[1]


def test_minimal_config_gets_the_documented_defaults():
    cfg, errors = config.validate(dict(GOOD))
    assert errors == []
    assert cfg["tb_host"] == "mqtt.thingsboard.cloud"
    assert cfg["tb_tls"] is True and cfg["tb_port"] == 8883 and cfg["tb_ca"] == "ca.der"
    assert cfg["attr_supplier_key"] == "Power_suppier_secret_key"
    assert cfg["attr_cups_key"] == "CUPs"
    assert cfg["pulses_per_kwh"] == 1000 and cfg["pulse_min_interval_ms"] == 15
    assert cfg["publish_interval_s"] == 60 and cfg["persist_interval_s"] == 60
    assert cfg["device_name"] is None and cfg["access_token"] is None


def test_plain_port_default_and_explicit_opt_in():
    errors = _errors(tb_tls=False)
    assert len(errors) == 1 and errors[0].startswith("tb_tls:")
    cfg, errors = config.validate(dict(GOOD, tb_tls=False, tb_plain_ok=True))
    assert errors == [] and cfg["tb_port"] == 1883


def test_each_required_field_missing_is_one_line_naming_it():
    for name in ("wifi_ssid", "supplier_key", "cups", "pulse_pin"):
        errors = _errors(**{name: config})
        assert errors == ["%s: required" % name], errors
    # Credentials: provision_key and provision_secret together, or ready credentials.
    assert _errors(provision_key=config) == ["provision_key: required with provision_secret"]
    assert _errors(provision_secret=config) == ["provision_secret: required with provision_key"]
    errors = _errors(provision_key=config, provision_secret=config)
    assert len(errors) == 1 and errors[0].startswith("provision_key: required (with "
                                                     "provision_secret), unless"), errors


def test_each_bad_value_is_one_line_naming_the_field():
    cases = {
        "wifi_ssid": "x" * 33, "wifi_password": "short", "tb_host": "",
        "tb_port": 70000, "tb_tls": "yes", "provision_key": "", "provision_secret": 5,
        "device_name": "   ", "access_token": "bad\ntoken", "supplier_key": None,
        "cups": "ES1234123456789012XY", "pulse_pin": -1, "pulse_pull_up": 1,
        "pulse_edge": "both", "pulses_per_kwh": 0, "pulse_min_interval_ms": 1.5,
        "publish_interval_s": 1, "attr_supplier_key": "", "attr_cups_key": 7,
        "reprovision_cycles": 99, "boot_button_pin": 99, "tb_ca": "",
    }
    for name, value in cases.items():
        errors = _errors(**{name: value})
        assert len(errors) == 1 and errors[0].startswith(name + ": "), (name, errors)


def test_all_problems_are_reported_at_once():
    errors = _errors(cups="ES1", pulse_pin="four", wifi_ssid=config)
    assert len(errors) == 3


def test_unknown_field_is_reported_as_a_probable_typo():
    assert _errors(pulse_pn=4) == ["pulse_pn: unknown field (typo?)"]


def test_secrets_are_never_echoed_in_errors():
    errors = _errors(provision_secret="sec\x01ret-value-xyz", wifi_password="abc")
    text = " ".join(errors)
    assert "ret-value-xyz" not in text and "abc" not in text


def test_cups_printed_form_is_accepted_and_stored_compact():
    spaced = "es 0021-0000-0001-2345 " + CUPS[18:20]
    cfg, errors = config.validate(dict(GOOD, cups=spaced))
    assert errors == [] and cfg["cups"] == CUPS


def test_reserved_name_and_distinct_pins_and_attr_keys():
    assert _errors(device_name="provision")[0].startswith("device_name:")
    assert _errors(status_led_pin=4)[0].startswith("pulse_pin:")
    assert _errors(attr_cups_key="Power_suppier_secret_key")[0].startswith("attr_cups_key:")
    assert _errors(tb_ca=None)[0].startswith("tb_ca:")


def test_parse_handles_non_json_and_non_objects():
    assert config.parse("{not json")[1] == [
        "config.json: line 1, column 2: expected a field name in double quotes"]
    assert config.parse("[1, 2]")[1] == ["the file must hold a JSON object ({...})"]
    cfg, errors = config.parse(json.dumps(GOOD))
    assert errors == []


def _warnings(**over):
    raw = dict(GOOD)
    raw.update(over)
    w = []
    config.validate(raw, w)
    return w


# --- every error at once (issue 12) -----------------------------------------------------------

def test_cross_field_checks_run_beside_per_field_errors():
    errors = _errors(cups="ES1", tb_tls=False, tb_plain_ok=False, retry_min_s=100,
                     retry_max_s=50, wifi_password="short", pulse_pin="four",
                     attr_cups_key="Power_suppier_secret_key")
    names = [e.split(":")[0] for e in errors]
    assert names == ["attr_cups_key", "cups", "pulse_pin", "retry_min_s", "tb_tls",
                     "wifi_password"], errors
    # A cross-field check leaves out a field that failed on its own: no second line for it.
    errors = _errors(retry_min_s="2", retry_max_s=50)
    assert errors == ["retry_min_s: must be an integer"], errors
    errors = _errors(status_led_pin=4, pulse_pin=99)  # pulse_pin bad: no clash reported
    assert len(errors) == 1 and errors[0].startswith("pulse_pin: must be between"), errors


# --- log lines never carry what the file says (issue 12) --------------------------------------

def _with(extra):
    # Not through keyword arguments: MicroPython interns those (and refuses long ones).
    raw = dict(GOOD)
    raw.update(extra)
    return config.validate(raw)[1]


def test_an_unknown_field_name_is_escaped_and_cut_short():
    errors = _with({"typo\n12.345 E main: unexpected fake line": 1})
    assert errors == ["typo\\x0a12.345 E main: unexpected fake line: unknown field (typo?)"]
    errors = _with({"\x1b[2J" + "k" * 300: 1})
    assert len(errors) == 1 and errors[0].startswith("\\x1b[2J" + "k" * 76 + "...: unknown")
    errors = _with({"caf\u00e9 \u202e": 1})
    assert errors == ["caf\\xc3\\xa9 \\xe2\\x80\\xae: unknown field (typo?)"]
    for e in errors:
        for b in e.encode():
            assert 32 <= b < 127


def test_no_message_echoes_a_text_value():
    marker = "VALUE-MARKER"
    for name in ("wifi_ssid", "device_name", "supplier_key", "tb_host", "attr_cups_key",
                 "telemetry_topic", "tb_ca", "access_token", "mqtt_username"):
        for value in (marker + "\n", marker * 30, marker + "\u202e", marker + "+#",
                      "<" + marker, "$" + marker, ""):
            for e in _errors(**{name: value}):
                assert marker not in e, (name, e)


# --- text fields: strict UTF-8, ASCII-only rules, the same on both runtimes -------------------

def test_cups_case_folding_is_ascii_only():
    # On CPython "ſ".upper() is "S" and "ı".upper() is "I"; MicroPython leaves them. The rule
    # folds ASCII only, so both runtimes refuse these CUPS.
    assert _errors(cups="e\u017f" + CUPS[2:]) == ["cups: must start with ES"]
    assert _errors(cups=CUPS[:18] + "d\u017a") == ["cups: must be ASCII"]
    assert _errors(cups=CUPS.lower()) == []
    assert _errors(cups="ES" + "\uff10" * 16 + CUPS[18:])[0].startswith("cups: must be ASCII")


def test_blank_is_ascii_spaces_only_as_thingsboard_trims():
    # ThingsBoard's isBlank is Java's trim(): characters up to U+0020. Unicode spaces are text.
    assert _errors(device_name="   ") == ["device_name: must not be blank"]
    assert _errors(device_name="\u3000") == []
    assert _errors(attr_cups_key=" ") == ["attr_cups_key: must not be blank"]


def test_control_and_invisible_characters_are_refused_in_every_text_field():
    for name in ("wifi_ssid", "wifi_password", "device_name", "supplier_key", "provision_key",
                 "access_token", "tb_host", "ntp_host", "attr_supplier_key", "telemetry_topic"):
        for bad in ("\x00", "\x7f", "\u0085", "\u009b"):
            assert _errors(**{name: "abcdefgh" + bad}) == [
                "%s: must not contain control characters" % name], (name, bad)
        for bad in (0x2028, 0x2029, 0x202E, 0x2066, 0x200F, 0xFEFF, 0xFFFE, 0xFDD0):
            errors = _errors(**{name: "abcdefgh" + chr(bad)})  # not %c: MicroPython cuts it
            assert errors == ["%s: must not contain U+%04X (an invisible or non-character code "
                              "point)" % (name, bad)], (name, errors)


def test_lengths_are_counted_as_their_receiver_counts():
    assert _errors(wifi_ssid="\u00e9" * 16) == []  # 32 bytes: the Wi-Fi driver's limit
    assert _errors(wifi_ssid="\u00e9" * 17) == [
        "wifi_ssid: must be 1 to 32 bytes (UTF-8), got 34"]
    assert _errors(device_name="\U0001f600" * 255) == []  # ThingsBoard names: characters
    assert _errors(device_name="x" * 256)[0].startswith("device_name: must be 1 to 255 characters")


# --- attribute keys as ThingsBoard's KvUtils stores them (docs/thingsboard.md) --------------

def test_attribute_keys_follow_thingsboards_key_rules():
    ok = ("a", "k" * 255, "\U0001f600" * 127 + "k", "a{{b", "}}{{", "a&b", "50% {x}")
    for key in ok:
        assert _errors(attr_cups_key=key) == [], key
    assert _errors(attr_cups_key="k" * 256)[0].startswith(
        "attr_cups_key: must be 1 to 255 characters (UTF-16 units")
    assert _errors(attr_cups_key="\U0001f600" * 128) == [
        "attr_cups_key: must be 1 to 255 characters (UTF-16 units, as ThingsBoard counts "
        "them), got 256"]
    for key in ("<b>CUPs", "a<b", "{{x}}", "x{{}}y", "{{{a}}}", "{{ a }}"):
        errors = _errors(attr_supplier_key=key)
        assert errors == ["attr_supplier_key: ThingsBoard drops attribute keys with '<' or "
                          "'{{...}}' (docs/thingsboard.md)"], (key, errors)
    assert _errors(attr_supplier_key="") == ["attr_supplier_key: must be 1 to 255 characters "
                                             "(UTF-16 units, as ThingsBoard counts them), got 0"]
    w = _warnings(supplier_key="sup<er-secret")
    assert len(w) == 1 and w[0].startswith("supplier_key: a ThingsBoard with attribute value")


# --- pins (issue 15) -------------------------------------------------------------------------

def test_flash_and_missing_pins_are_refused():
    for pin in range(6, 12):
        for name in ("pulse_pin", "status_led_pin", "boot_button_pin"):
            errors = _errors(**{name: pin})
            assert errors == ["%s: GPIO 6-11 are wired to the ESP32's flash chip; using one "
                              "stops the board" % name], errors
    for pin in (20, 24, 28, 29, 30, 31):
        assert _errors(pulse_pin=pin) == ["pulse_pin: GPIO %d does not exist on the ESP32" % pin]
    assert _errors(pulse_pin=40)[0] == "pulse_pin: must be between 0 and 39, got 40"
    for pin in (4, 13, 14, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33):
        assert _errors(pulse_pin=pin) == [], pin


def test_input_only_pins_have_no_pull_up_and_drive_no_led():
    for pin in range(34, 40):
        assert _errors(pulse_pin=pin) == [
            "pulse_pull_up: GPIO 34-39 have no internal pull-up; set pulse_pull_up to false "
            "and fit an external pull-up resistor (e.g. 10 kOhm to 3V3)"]
        assert _errors(pulse_pin=pin, pulse_pull_up=False) == []
        assert _errors(status_led_pin=pin) == [
            "status_led_pin: GPIO 34-39 are input only: they cannot drive an LED"]
    w = _warnings(boot_button_pin=36)
    assert w == ["boot_button_pin: GPIO 34-39 have no internal pull-up: the button needs an "
                 "external pull-up resistor"]


def test_strapping_and_console_pins_warn_without_failing():
    for pin in (2, 5, 12, 15):
        assert _errors(pulse_pin=pin) == []
        w = _warnings(pulse_pin=pin)
        assert len(w) == 1 and w[0].startswith(
            "pulse_pin: GPIO %d is a strapping pin, read at power-up" % pin), w
    assert _errors(pulse_pin=0) == [
        "pulse_pin: pulse_pin, status_led_pin and boot_button_pin must differ"]
    assert len(_warnings(pulse_pin=0, boot_button_pin=None)) == 1
    w = _warnings(pulse_pin=1, status_led_pin=3)
    assert [x.split(":")[0] for x in w] == ["pulse_pin", "status_led_pin"], w
    assert "serial console" in w[0] and "serial console" in w[1]
    assert _warnings() == []


# --- credentials: provisioning or ready credentials (issue 17) -------------------------------

def _creds(**over):
    raw = dict(GOOD)
    del raw["provision_key"], raw["provision_secret"]
    raw.update(over)
    return config.validate(raw)


def test_ready_credentials_need_no_provision_key():
    cfg, errors = _creds(access_token="ready-token-0001")
    assert errors == [] and cfg["provision_key"] is None and cfg["access_token"] == "ready-token-0001"
    for basic in ({"mqtt_username": "user-1"}, {"mqtt_client_id": "client-1"},
                  {"mqtt_client_id": "c", "mqtt_username": "u", "mqtt_password": "p"},
                  {"mqtt_username": "u", "mqtt_password": "p"}):
        assert _creds(**basic)[1] == [], basic


def test_credential_combinations_thingsboard_refuses_are_errors():
    assert _creds(mqtt_password="p")[1] == [
        "mqtt_password: needs mqtt_username (MQTT_BASIC takes a client id, a user name, or "
        "both)"]
    assert _creds(mqtt_client_id="c", mqtt_password="p")[1] == [
        "mqtt_password: ThingsBoard refuses a password with a client id alone; add "
        "mqtt_username"]
    assert _creds(mqtt_username="u", access_token="t")[1] == [
        "access_token: give either access_token or the mqtt_* fields (MQTT_BASIC), not both"]
    errors = _errors(mqtt_username="u")  # GOOD has provision_key and provision_secret
    assert errors == ["mqtt_username: MQTT_BASIC credentials are used as they are, without "
                      "provisioning: remove provision_key and provision_secret"], errors
    for name in ("access_token", "mqtt_client_id", "mqtt_username"):
        assert _creds(**{name: "provision"})[1] == [
            "%s: 'provision' is reserved by ThingsBoard" % name]
    assert _creds(access_token="tok\nen")[1] == ["access_token: must not contain control "
                                                 "characters"]


# --- the device profile's topics (issue 17) ---------------------------------------------------

def test_topics_default_to_thingsboards_and_are_mqtt_topic_names():
    cfg, errors = config.validate(dict(GOOD))
    # Not given: not in the config (cfg.get(name) or the default), as the mqtt_* fields.
    assert "telemetry_topic" not in cfg and "attributes_topic" not in cfg
    assert "mqtt_username" not in cfg and "mqtt_client_id" not in cfg
    assert config.FIELDS["telemetry_topic"][1] == "v1/devices/me/telemetry"
    assert config.FIELDS["attributes_topic"][1] == "v1/devices/me/attributes"
    cfg, errors = config.validate(dict(GOOD, telemetry_topic="meters/t"))
    assert errors == [] and cfg["telemetry_topic"] == "meters/t"
    for topic in ("meters/energy", "/", "a//b", "v1/devices/me/telemetry/\u00e9", "x" * 8000):
        assert _errors(telemetry_topic=topic) == [], topic
    assert _errors(telemetry_topic="t" * 65536) == [
        "telemetry_topic: must be 1 to 65535 bytes (UTF-8), got 65536"]
    assert _errors(telemetry_topic="")[0].startswith("telemetry_topic: must be 1 to 65535")
    for topic in ("v1/+/telemetry", "v1/#", "a#b"):
        assert _errors(telemetry_topic=topic) == [
            "telemetry_topic: must not contain the MQTT wildcards + and #"]
    assert _errors(attributes_topic="$SYS/x") == [
        "attributes_topic: must not start with '$' (reserved for the server's own topics)"]
    assert _errors(attributes_topic="a\x00b") == [
        "attributes_topic: must not contain control characters"]
    assert _errors(attributes_topic="v1/devices/me/telemetry") == [
        "attributes_topic: must differ from telemetry_topic"]
    assert _errors(telemetry_topic="v1/devices/me/attributes") == [
        "attributes_topic: must differ from telemetry_topic"]
    assert _errors(telemetry_topic=5) == ["telemetry_topic: must be a string"]


def test_tb_ca_is_a_plain_file_name():
    for name in ("ca.der", "certs/site-ca_2.der"):
        assert _errors(tb_ca=name) == []
    for name in ("ca der", "ca.der\n", "c\u00e4.der", "ca;rm"):
        errors = _errors(tb_ca=name)
        assert len(errors) == 1 and errors[0].startswith("tb_ca: "), (name, errors)


def test_the_setup_access_point_fields():
    cfg, errors = config.validate(dict(GOOD))
    assert errors == [] and cfg["setup_password"] is None  # no password: it never opens
    assert cfg["setup_after_s"] == 600 and cfg["setup_timeout_s"] == 900
    assert _errors(setup_password="abcd-efgh-jkmn-pqrs", setup_after_s=0) == []
    assert _errors(setup_password="short") == [
        "setup_password: must be 8 to 63 characters, got 5"]
    assert _errors(setup_password="x" * 64) == [
        "setup_password: must be 8 to 63 characters, got 64"]
    assert _errors(setup_password="caf\u00e9-password") == [
        "setup_password: must be printable ASCII (a WPA2 passphrase)"]
    assert _errors(setup_password="tab\there-123") == [
        "setup_password: must not contain control characters"]
    assert _errors(setup_after_s=29) == [
        "setup_after_s: must be 0 (never by itself) or at least 30"]
    assert _errors(setup_timeout_s=59) == [
        "setup_timeout_s: must be between 60 and 3600, got 59"]
    assert "setup_password" in config.SECRET_FIELDS
    errors = _errors(setup_password="pw")
    assert errors and "pw" not in errors[0].split(":", 1)[1]  # never echoed
