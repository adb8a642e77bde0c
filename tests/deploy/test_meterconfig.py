"""tools/meterconfig.py: per-meter config files, validated by the firmware's own rules."""

import csv
import json
import os
import stat

import pytest

from deploy_support import cups_for, meterconfig
from firmware import config
from tools import meterconfig as mc

SECRETS = {"wifi_password": "wifi-password-0001", "provision_key": "profile-key-0001",
           "provision_secret": "profile-secret-0001", "supplier_key": "supplier-key-0001"}


def one_args(out, name="meter-0001", cups=None, **extra):
    args = ["one", "--out", out, "--name", name, "--cups", cups or cups_for(1),
            "--supplier-key", SECRETS["supplier_key"], "--wifi-ssid", "site-wifi",
            "--wifi-password", SECRETS["wifi_password"],
            "--provision-key", SECRETS["provision_key"],
            "--provision-secret", SECRETS["provision_secret"], "--pulse-pin", "4"]
    for k, v in extra.items():
        args += ["--" + k.replace("_", "-")] + ([] if v is True else [v])
    return args


def assert_no_secret(text, *values):
    for v in values:
        assert v not in text, "secret %r printed in full" % v


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_one_meter_from_flags_is_valid_private_and_masked(tmp_path):
    out = str(tmp_path / "devices")
    r = meterconfig(*one_args(out, generate_token=True))
    assert r.returncode == 0, r.stderr
    path = os.path.join(out, "meter-0001.json")
    assert mode(path) == 0o600 and mode(out) == 0o700
    with open(path) as f:
        text = f.read()
    cfg, errors = config.parse(text)  # exactly what the meter does at boot
    assert errors == []
    assert cfg["device_name"] == "meter-0001" and cfg["pulse_pin"] == 4
    token = cfg["access_token"]
    assert len(token) == mc.TOKEN_LENGTH and token.isalnum()
    assert_no_secret(r.stdout + r.stderr, token, *SECRETS.values())
    assert "pr...01" in r.stdout  # masked by firmware.log.mask
    assert "(generated)" in r.stdout


def test_printed_cups_form_is_stored_compact(tmp_path):
    c = cups_for(7)
    printed = "%s %s-%s %s" % (c[:2], c[2:10], c[10:18], c[18:])
    r = meterconfig(*one_args(str(tmp_path), cups=printed))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "meter-0001.json") as f:
        assert json.load(f)["cups"] == c


def test_one_meter_with_bad_fields_reports_each_and_writes_nothing(tmp_path):
    out = str(tmp_path / "devices")
    r = meterconfig(*one_args(out, cups="ES0021000000000001XX0F", pulse_pin="four",
                              set="tb_prot=8883"))
    assert r.returncode == 1
    assert "cups: check letters should be" in r.stderr
    assert "pulse_pin: must be an integer" in r.stderr
    assert "tb_prot: unknown field" in r.stderr
    assert "nothing written" in r.stderr
    assert not os.path.exists(out)
    assert_no_secret(r.stdout + r.stderr, *SECRETS.values())


def test_rewrite_needs_force_and_keeps_the_token_unless_asked(tmp_path):
    out = str(tmp_path)
    path = os.path.join(out, "meter-0001.json")
    assert meterconfig(*one_args(out, generate_token=True)).returncode == 0
    with open(path) as f:
        token = json.load(f)["access_token"]
    r = meterconfig(*one_args(out, generate_token=True))
    assert r.returncode == 2 and "exists" in r.stderr
    r = meterconfig(*one_args(out, generate_token=True, force=True, set="pulses_per_kwh=800"))
    assert r.returncode == 0 and "(kept)" in r.stdout
    with open(path) as f:
        again = json.load(f)
    assert again["access_token"] == token and again["pulses_per_kwh"] == 800
    os.chmod(path, 0o644)
    r = meterconfig(*one_args(out, generate_token=True, force=True, new_token=True))
    assert r.returncode == 0
    with open(path) as f:
        assert json.load(f)["access_token"] != token
    assert mode(path) == 0o600  # an older, looser file mode is not kept


def test_tokens_come_from_the_cryptographic_rng_and_differ(monkeypatch):
    assert mc.secrets.__name__ == "secrets"
    tokens = {mc.generate_token() for _ in range(200)}
    assert len(tokens) == 200
    calls = []
    monkeypatch.setattr(mc.secrets, "choice", lambda seq: calls.append(1) or seq[0])
    assert mc.generate_token() == "a" * mc.TOKEN_LENGTH and len(calls) == mc.TOKEN_LENGTH


def test_rules_are_the_firmware_validator_not_a_copy(monkeypatch, tmp_path):
    # The tool has no rules of its own: whatever firmware/config.py says is what it reports.
    assert mc.config is config
    monkeypatch.setattr(config, "validate", lambda raw: ({}, ["cups: vetoed by the firmware"]))
    _data, _cfg, errors, _note = mc.build({"device_name": "m"})
    assert errors == ["cups: vetoed by the firmware"]


def write_csv(path, rows, header=None):
    header = header or ["device_name", "cups", "supplier_key", "wifi_ssid", "wifi_password",
                        "provision_key", "provision_secret", "pulse_pin"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def row(n, **over):
    r = {"device_name": "meter-%04d" % n, "cups": cups_for(n), "supplier_key": "supplier-%04d" % n,
         "wifi_ssid": "site-wifi", "wifi_password": "wifi-password", "provision_key": "pk-0001",
         "provision_secret": "ps-000001", "pulse_pin": "4"}
    r.update(over)
    return list(r.values())


def test_batch_writes_one_private_file_per_meter(tmp_path):
    src = str(tmp_path / "meters.csv")
    write_csv(src, [row(n) for n in range(1, 6)])
    defaults = tmp_path / "site.json"
    defaults.write_text(json.dumps({"tb_host": "tb.example.net", "pulses_per_kwh": 800}))
    out = str(tmp_path / "devices")
    r = meterconfig("batch", src, "--out", out, "--defaults", str(defaults), "--generate-token")
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(out))
    assert names == ["meter-%04d.json" % n for n in range(1, 6)]
    tokens = set()
    for name in names:
        p = os.path.join(out, name)
        assert mode(p) == 0o600
        with open(p) as f:
            cfg, errors = config.parse(f.read())
        assert errors == [] and cfg["tb_host"] == "tb.example.net" and cfg["pulses_per_kwh"] == 800
        tokens.add(cfg["access_token"])
    assert len(tokens) == 5
    assert_no_secret(r.stdout + r.stderr, "wifi-password", "ps-000001", *tokens)


def test_batch_with_bad_rows_reports_every_line_and_writes_nothing(tmp_path):
    src = str(tmp_path / "meters.csv")
    write_csv(src, [
        row(1),                                          # line 2: fine
        row(2, cups="ES0021000000000002AA0F"),           # line 3: check letters
        row(3, pulse_pin="x", wifi_password="short"),    # line 4: not an integer
        row(4),                                          # line 5: fine
        row(5, device_name="meter-0001"),                # line 6: duplicate name
        row(6, device_name="bad name/.."),               # line 7: not a file name
    ])
    out = str(tmp_path / "devices")
    r = meterconfig("batch", src, "--out", out)
    assert r.returncode == 1
    err = r.stderr
    assert "meters.csv:3: cups: check letters should be" in err
    assert "meters.csv:4: pulse_pin: must be an integer" in err
    assert "meters.csv:6: device_name: same as line 2" in err
    assert "meters.csv:7: device_name: use letters" in err
    assert ":2:" not in err and ":5:" not in err
    assert "4 problem(s); nothing written" in err
    assert not os.path.exists(out)


def test_batch_missing_column_and_unknown_column(tmp_path):
    src = str(tmp_path / "meters.csv")
    write_csv(src, [row(1)[:-1]], header=["device_name", "cups", "supplier_key", "wifi_ssid",
                                          "wifi_password", "provision_key", "provision_secret"])
    r = meterconfig("batch", src, "--out", str(tmp_path / "d"))
    assert r.returncode == 1 and "pulse_pin: required" in r.stderr  # not in CSV nor defaults
    write_csv(src, [row(1)[:-1]], header=["device_name", "cups", "supplier_key", "wifi_ssid",
                                          "wifi_passwd", "provision_key", "provision_secret"])
    r = meterconfig("batch", src, "--out", str(tmp_path / "d"))
    assert r.returncode == 1 and "missing column(s): wifi_password" in r.stderr
    write_csv(src, [row(1) + ["7"]], header=["device_name", "cups", "supplier_key", "wifi_ssid",
                                             "wifi_password", "provision_key",
                                             "provision_secret", "pulse_pin", "pulse_pn"])
    r = meterconfig("batch", src, "--out", str(tmp_path / "d"))
    assert r.returncode == 1 and "meters.csv:2: pulse_pn: unknown field" in r.stderr
    assert not os.path.exists(tmp_path / "d")


def test_batch_rerun_refuses_existing_files_then_keeps_tokens_with_force(tmp_path):
    src = str(tmp_path / "meters.csv")
    write_csv(src, [row(1), row(2)])
    out = str(tmp_path / "devices")
    assert meterconfig("batch", src, "--out", out, "--generate-token").returncode == 0
    before = {n: json.load(open(os.path.join(out, n)))["access_token"] for n in os.listdir(out)}
    r = meterconfig("batch", src, "--out", out, "--generate-token")
    assert r.returncode == 1 and "exists" in r.stderr
    r = meterconfig("batch", src, "--out", out, "--generate-token", "--force")
    assert r.returncode == 0
    after = {n: json.load(open(os.path.join(out, n)))["access_token"] for n in os.listdir(out)}
    assert after == before


def test_check_validates_as_the_meter_and_warns_on_loose_mode(tmp_path):
    good = tmp_path / "good.json"
    assert meterconfig(*one_args(str(tmp_path), name="good")).returncode == 0
    os.chmod(good, 0o644)
    r = meterconfig("check", str(good))
    assert r.returncode == 0 and "ok:" in r.stdout and "chmod 600" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"wifi_ssid": "x"}))
    r = meterconfig("check", str(bad))
    assert r.returncode == 1 and "provision_key: required" in r.stderr


@pytest.mark.parametrize("value,expected", [("4", 4), (" 12 ", 12), ("four", "four")])
def test_cells_get_the_json_type_of_their_field(value, expected):
    assert mc.coerce("pulse_pin", value) == expected
    assert mc.coerce("tb_tls", "yes") is True and mc.coerce("tb_tls", "0") is False
    assert mc.coerce("cups", "0012") == "0012"


def test_every_meter_gets_its_own_setup_password_printed_in_full_only_on_its_label(tmp_path):
    out = str(tmp_path / "devices")
    r = meterconfig(*one_args(out))
    assert r.returncode == 0, r.stderr
    path = os.path.join(out, "meter-0001.json")
    with open(path) as f:
        pw = json.load(f)["setup_password"]
    assert len(pw) == 19 and pw.count("-") == 3
    assert set(pw.replace("-", "")) <= set(mc.SETUP_ALPHABET) and not set("lo01") & set(pw)
    assert config.parse(open(path).read())[1] == []  # a password the meter takes
    assert_no_secret(r.stdout + r.stderr, pw)
    assert "setup meter-0001-setup/%s...%s" % (pw[:2], pw[-2:]) in r.stdout  # masked
    r = meterconfig(*one_args(out, force=True, set="pulses_per_kwh=800"))
    assert r.returncode == 0 and json.load(open(path))["setup_password"] == pw  # kept
    r = meterconfig("check", path)
    assert r.returncode == 0 and pw not in r.stdout
    r = meterconfig("label", path)
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["meter-0001", "  CUPS            %s" % cups_for(1),
                                     "  setup Wi-Fi     meter-0001-setup (WPA2)",
                                     "  setup password  %s" % pw]


def test_setup_passwords_come_from_the_cryptographic_rng_and_differ(monkeypatch):
    pws = {mc.generate_setup_password() for _ in range(200)}
    assert len(pws) == 200
    calls = []
    monkeypatch.setattr(mc.secrets, "choice", lambda seq: calls.append(1) or seq[0])
    assert mc.generate_setup_password() == "aaaa-aaaa-aaaa-aaaa" and len(calls) == 16


def test_a_file_without_a_setup_password_is_flagged_by_check(tmp_path):
    out = str(tmp_path / "devices")
    assert meterconfig(*one_args(out)).returncode == 0
    path = os.path.join(out, "meter-0001.json")
    raw = json.load(open(path))
    del raw["setup_password"]
    mc.write_private(path, raw)
    r = meterconfig("check", path)
    assert r.returncode == 0 and "no setup_password" in r.stdout
    r = meterconfig("label", path)
    assert "setup password  none: this meter cannot be set up from a phone" in r.stdout
