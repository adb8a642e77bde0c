"""`make selftest PORT=...` against the fake board: the report a technician reads, with only
what the fake board really does passing (config, a real TLS handshake); the board checks say
SKIP and why. The checks' logic on an ESP32 HAL: tests/unit/test_selftest_checks.py."""

import os
import re

import pytest

from deploy_support import ROOT, cups_for, make, meterconfig, wait_until
from lab.certs import make_test_pki
from tbsim import Profile, TBSim

KEY, SECRET = "selftest-key", "selftest-secret"
CHECKS = ("config", "heap", "watchdog", "counter", "pulses", "led", "wifi", "ntp", "tls")


def make_config(tmp_path, **extra):
    args = ["one", "--out", str(tmp_path / "devices"), "--name", "meter-0099", "--cups",
            cups_for(99), "--supplier-key", "supplier-key-0099", "--wifi-ssid", "site",
            "--wifi-password", "site-wifi-password", "--provision-key", KEY,
            "--provision-secret", SECRET, "--pulse-pin", "4", "--force"]
    for k, v in extra.items():
        args += ["--set", "%s=%s" % (k, v)]
    r = meterconfig(*args)
    assert r.returncode == 0, r.stderr
    return str(tmp_path / "devices" / "meter-0099.json")


def report(stdout):
    """{check: (verdict, text)} from the lines of the report."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"(PASS|FAIL|SKIP)  (\S+) +(.*)", line)
        if m:
            out[m.group(2)] = (m.group(1), m.group(3))
    return out


@pytest.fixture
def tls_server(tmp_path):
    pki = make_test_pki(str(tmp_path / "pki"), hostnames=("localhost",))
    s = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=0, certfile=pki["cert"],
              keyfile=pki["key"])
    s.start()
    yield s, pki
    s.stop()


def test_plain_config_every_board_check_is_skipped_with_why_and_the_board_is_reset(tmp_path, board):
    cfg = make_config(tmp_path, tb_host="127.0.0.1", tb_tls="false", tb_plain_ok="true",
                      status_led_pin="2")
    assert make("deploy", PORT=board.port, CONFIG=cfg).returncode == 0
    resets = board.events().count("fakeboard: hard reset")
    r = make("selftest", PORT=board.port, SELFTEST_PIN="5")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = report(r.stdout)
    assert list(rep) == list(CHECKS), r.stdout  # one line per check, in order
    assert rep["config"][0] == "PASS" and "meter-0099, pulse pin 4" in rep["config"][1]
    # The fake board is the Unix port: nothing it cannot really do passes.
    assert {c for c, (v, _t) in rep.items() if v == "PASS"} == {"config"}
    assert rep["watchdog"] == ("SKIP", "no hardware watchdog on the linux port")
    assert rep["counter"][1].startswith("no PCNT on the linux port")
    assert rep["pulses"][1].startswith("no GPIO on the linux port")
    assert rep["wifi"][1].startswith("no radio on the linux port")
    assert rep["tls"] == ("SKIP", "tb_tls is off (plain MQTT): no certificate to verify")
    assert re.match(r"\d+ bytes free; the 81920-byte minimum is an ESP32's", rep["heap"][1])
    assert "self-test: 1 PASS, 0 FAIL, 8 SKIP" in r.stdout
    assert "the board was reset and the meter runs" in r.stdout
    assert wait_until(lambda: board.events().count("fakeboard: hard reset") == resets + 1)
    # Loaded for the test only: the meter's modules do not import it (nor main.py, nor wiring).
    imports = re.compile(r"^\s*(from|import)\s[^\n#]*selftest", re.M)
    paths = [os.path.join(ROOT, f) for f in ("main.py", "boot.py")]
    for d, _dirs, files in os.walk(os.path.join(ROOT, "firmware")):
        paths += [os.path.join(d, f) for f in files if f.endswith(".py") and f != "selftest.py"]
    assert len(paths) > 20
    for path in paths:
        with open(path) as f:
            assert not imports.search(f.read()), path


def test_a_tls_handshake_with_the_deployed_ca_passes_and_a_wrong_ca_fails(tmp_path, board,
                                                                           tls_server):
    sim, pki = tls_server
    cfg = make_config(tmp_path, tb_host="localhost", tb_port=str(sim.mqtts_port))
    assert make("deploy", PORT=board.port, CONFIG=cfg, CA=pki["ca_der"]).returncode == 0
    r = make("selftest", PORT=board.port)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = report(r.stdout)
    assert rep["tls"] == ("PASS", "localhost:%d: certificate chain and host name verified with "
                                  "ca.der" % sim.mqtts_port), r.stdout
    assert rep["pulses"][1].startswith("no SELFTEST_PIN: connect a jumper wire from a free GPIO "
                                       "to GPIO 4 (pulse_pin)")
    assert [e for e in sim.events("connect")] == []  # a handshake, no MQTT session

    other = make_test_pki(str(tmp_path / "other"), ca_name="not-the-servers-ca")
    assert make("deploy", PORT=board.port, CONFIG=cfg, CA=other["ca_der"]).returncode == 0
    r = make("selftest", PORT=board.port)
    assert r.returncode != 0  # make: the tool exited 1
    verdict, text = report(r.stdout)["tls"]
    assert verdict == "FAIL" and "TLS: The certificate is not correctly signed by the trusted CA" \
        in text and "deploy the CA the server's chain ends at" in text, r.stdout
    assert "selftest: 1 check(s) FAILED" in r.stderr

    sim.stop()  # nothing listening any more
    r = make("selftest", PORT=board.port)
    verdict, text = report(r.stdout)["tls"]
    assert verdict == "FAIL" and "connection refused: check tb_host and tb_port" in text, r.stdout


@pytest.mark.parametrize("pin, why", [
    ("4", "SELFTEST_PIN=4 is pulse_pin itself"),
    ("7", "SELFTEST_PIN=7 is wired to the flash chip on an ESP32"),
    ("36", "SELFTEST_PIN=36 is input-only on an ESP32"),
])
def test_a_test_pin_that_cannot_drive_the_jumper_fails_before_any_pin_is_touched(tmp_path, board,
                                                                                 pin, why):
    cfg = make_config(tmp_path, tb_host="127.0.0.1", tb_tls="false", tb_plain_ok="true")
    assert make("deploy", PORT=board.port, CONFIG=cfg).returncode == 0
    r = make("selftest", PORT=board.port, SELFTEST_PIN=pin)
    assert r.returncode != 0  # make: the tool exited 1
    verdict, text = report(r.stdout)["pulses"]
    assert verdict == "FAIL" and text.startswith(why), r.stdout


def test_a_bad_config_fails_and_what_needs_it_is_skipped(tmp_path, board):
    cfg = make_config(tmp_path, tb_host="127.0.0.1", tb_tls="false", tb_plain_ok="true")
    assert make("deploy", PORT=board.port, CONFIG=cfg).returncode == 0
    with open(os.path.join(board.root, "config.json"), "w") as f:
        f.write('{"wifi_ssid": "site", "pulse_pin": "four"}')
    r = make("selftest", PORT=board.port, SELFTEST_PIN="5")
    assert r.returncode != 0  # make: the tool exited 1
    rep = report(r.stdout)
    assert rep["config"][0] == "FAIL" and "pulse_pin: must be an integer" in rep["config"][1]
    assert "fix config.json (tools/meterconfig.py) and make deploy" in rep["config"][1]
    for check in ("pulses", "wifi", "tls"):
        assert rep[check] == ("SKIP", "needs a valid config.json (see config)")


def test_without_firmware_or_port_or_with_a_bad_pin_it_says_so(board):
    r = make("selftest", PORT=board.port)
    assert r.returncode != 0 and "no meter firmware on the board" in r.stderr, r.stdout + r.stderr
    r = make("selftest")
    assert r.returncode != 0 and "no PORT given" in r.stderr
    r = make("selftest", PORT=board.port, SELFTEST_PIN="GPIO5")
    assert r.returncode != 0 and "SELFTEST_PIN=GPIO5: the GPIO number" in r.stderr
