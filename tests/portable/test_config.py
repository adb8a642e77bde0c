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
    for name in ("wifi_ssid", "provision_key", "provision_secret", "supplier_key", "cups",
                 "pulse_pin"):
        errors = _errors(**{name: config})
        assert errors == ["%s: required" % name], errors


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
    assert config.parse("{not json")[1] == ["config.json is not valid JSON"]
    assert config.parse("[1, 2]")[1] == ["the file must hold a JSON object"]
    cfg, errors = config.parse(json.dumps(GOOD))
    assert errors == []


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
