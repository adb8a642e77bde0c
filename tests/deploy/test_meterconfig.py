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
    monkeypatch.setattr(config, "validate",
                        lambda raw, warnings=None: ({}, ["cups: vetoed by the firmware"]))
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
    # Every error at once: the cross-field password check runs beside the bad pulse_pin.
    assert "meters.csv:4: wifi_password: must be empty (open network) or 8 to 63" in err
    assert "meters.csv:6: device_name: same as line 2" in err
    assert "meters.csv:7: device_name: use letters" in err
    assert ":2:" not in err and ":5:" not in err
    assert "5 problem(s); nothing written" in err
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


# --- issue 15: duplicates across the folder and across batches; missing files; warnings -----

def test_a_second_batch_may_not_reuse_a_cups_or_token_from_the_output_folder(tmp_path):
    out = str(tmp_path / "devices")
    first = str(tmp_path / "first.csv")
    write_csv(first, [row(1), row(2)])
    assert meterconfig("batch", first, "--out", out, "--generate-token").returncode == 0
    with open(os.path.join(out, "meter-0001.json")) as f:
        token = json.load(f)["access_token"]
    second = str(tmp_path / "second.csv")
    header = ["device_name", "cups", "supplier_key", "wifi_ssid", "wifi_password",
              "provision_key", "provision_secret", "pulse_pin", "access_token"]
    # meter-0003: the supply point of meter-0001 (the same 20 characters, another border
    # point); meter-0004: the token of meter-0001; meter-0005: fine.
    write_csv(second, [row(3, cups=cups_for(1)[:20] + "1P") + [""],
                       row(4) + [token], row(5) + [""]], header=header)
    r = meterconfig("batch", second, "--out", out)
    assert r.returncode == 1, r.stdout
    assert "meter-0003.json: cups: same as %s" % os.path.join(out, "meter-0001.json") in r.stderr
    assert "meter-0004.json: access_token: same as %s" % os.path.join(out, "meter-0001.json") \
        in r.stderr
    assert "2 problem(s); nothing written" in r.stderr
    assert sorted(os.listdir(out)) == ["meter-0001.json", "meter-0002.json"]
    assert token not in r.stdout + r.stderr
    # One meter from flags: the same rule against the folder.
    r = meterconfig(*one_args(out, name="meter-0009", cups=cups_for(2)))
    assert r.returncode == 1 and "cups: same as" in r.stderr and "meter-0002.json" in r.stderr
    # Rewriting a batch's own files (--force) is not a clash with themselves.
    assert meterconfig("batch", first, "--out", out, "--generate-token",
                       "--force").returncode == 0


def test_check_refuses_duplicates_among_the_files_and_their_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert meterconfig(*one_args(str(a), name="m1")).returncode == 0
    assert meterconfig(*one_args(str(b), name="m2")).returncode == 0  # same CUPS, other folder
    assert meterconfig(*one_args(str(a), name="m3", cups=cups_for(3))).returncode == 0
    (a / "site.json").write_text('{"pulse_pin": 4}')  # not a meter config: left out
    r = meterconfig("check", str(a / "m1.json"), str(b / "m2.json"))
    assert r.returncode == 1
    assert "m1.json: cups: same as" in r.stderr and "m2.json: cups: same as" in r.stderr
    # Within one folder: m3 given alone still meets m1's CUPS? No: m3 is unique.
    assert meterconfig("check", str(a / "m3.json")).returncode == 0
    # A copy of m1 in the folder under another name clashes with m1 even if only m1 is given.
    data = json.loads((a / "m1.json").read_text())
    data["device_name"] = "m4"
    (a / "m4.json").write_text(json.dumps(data))
    r = meterconfig("check", str(a / "m1.json"))
    assert r.returncode == 1 and "m1.json: cups: same as" in r.stderr and "m4.json" in r.stderr


def test_a_missing_file_says_no_such_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    r = meterconfig("check", missing)
    assert r.returncode == 1 and r.stderr.strip() == "%s: no such file" % missing
    r = meterconfig("batch", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "nope.csv: no such file" in r.stderr
    from tools import deploy
    with pytest.raises(deploy.DeployError) as e:
        deploy.deploy("/dev/null-port", missing)
    assert str(e.value) == "%s: no such file" % missing
    assert "not a valid meter config" not in str(e.value)


def test_ready_credentials_need_no_provision_key_and_a_generated_token_needs_one(tmp_path):
    out = str(tmp_path)
    args = [a for a in one_args(out) if a not in ("--provision-key", "--provision-secret",
                                                  SECRETS["provision_key"],
                                                  SECRETS["provision_secret"])]
    r = meterconfig(*(args + ["--access-token", "token-from-the-platform-01"]))
    assert r.returncode == 0, r.stderr
    assert "(ready: never provisions)" in r.stdout and "to...01" in r.stdout
    cfg, errors = config.load(os.path.join(out, "meter-0001.json"))
    assert errors == [] and cfg["provision_key"] is None
    r = meterconfig(*(args + ["--name", "meter-0002", "--cups", cups_for(2),
                              "--generate-token"]))
    assert r.returncode == 1 and "access_token: --generate-token" in r.stderr
    r = meterconfig(*(args + ["--name", "meter-0003", "--cups", cups_for(3),
                              "--set", "mqtt_username=basic-user-0003",
                              "--set", "mqtt_password=basic-password-3"]))
    assert r.returncode == 0, r.stderr
    assert "MQTT_BASIC client <none> user ba...03 password ba...-3" in r.stdout
    assert_no_secret(r.stdout + r.stderr, "basic-user-0003", "basic-password-3")


def test_warnings_are_shown_and_do_not_refuse_the_config(tmp_path):
    r = meterconfig(*one_args(str(tmp_path), set="pulse_pin=12"))
    assert r.returncode == 0, r.stderr
    assert "warning: pulse_pin: GPIO 12 is a strapping pin" in r.stderr
    r = meterconfig("check", str(tmp_path / "meter-0001.json"))
    assert r.returncode == 0 and "warning: pulse_pin: GPIO 12" in r.stderr
    r = meterconfig(*one_args(str(tmp_path), name="m2", cups=cups_for(2), set="pulse_pin=7"))
    assert r.returncode == 1 and "pulse_pin: GPIO 6-11 are wired to the ESP32's flash" in r.stderr


def test_check_reads_with_the_meters_size_limit(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"wifi_ssid": "x" * 20000}))
    r = meterconfig("check", str(big))
    assert r.returncode == 1 and r.stderr.strip() == "%s: larger than 8192 bytes" % big


def test_undecodable_bytes_from_the_command_line_are_an_error_not_a_crash(tmp_path):
    # CPython turns an undecodable argv byte into a lone surrogate, which cannot be encoded:
    # the validator says so (MicroPython never holds such a str; its bytes are checked instead).
    import subprocess
    from deploy_support import PY, ROOT
    args = [a.encode() for a in one_args(str(tmp_path))]
    args[args.index(b"--wifi-ssid") + 1] = b"site-\xff-wifi"
    r = subprocess.run([PY.encode(), os.path.join(ROOT, "tools", "meterconfig.py").encode()] + args,
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "wifi_ssid: must be valid UTF-8 text" in r.stderr and "Traceback" not in r.stderr
    assert config.parse("{\"a\": \"\udcff\"}")[1] == ["config.json: not valid UTF-8"]
    assert "x\\xed\\xb3\\xbf: unknown field (typo?)" in config.validate({"x\udcff": 1})[1]


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


def test_a_long_path_is_named_whole_and_once(tmp_path):
    # The firmware cuts names at 80 characters in its log lines; the tool names the file as the
    # technician typed it (this failed only where pytest's own temporary paths were long).
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    missing = str(deep / "nope.json")
    r = meterconfig("check", missing)
    assert r.returncode == 1 and r.stderr.strip() == "%s: no such file" % missing, r.stderr
