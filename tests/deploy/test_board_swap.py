"""A board swap (or `make flash`, which erases the flash): `make deploy ... INDEX=` / `KWH=` sets
the starting pulse index from the meter's own register, atomically, in the firmware's record
format; never below what the board already counts unless FORCE=1; never remotely."""

import json
import os
import time

import pytest

from deploy_support import cups_for, make, meterconfig, wait_until
from lab.meterhost import VirtualMeter
from tbsim import Profile, TBSim
from tools import deploy as deploytool

KEY, SECRET = "swap-profile-key", "swap-profile-secret"


def make_config(tmp_path, port=1883, **extra):
    args = ["one", "--out", str(tmp_path / "devices"), "--name", "meter-0077", "--cups", cups_for(77),
            "--supplier-key", "supplier-key-0077", "--wifi-ssid", "site", "--wifi-password",
            "site-wifi-password", "--provision-key", KEY, "--provision-secret", SECRET,
            "--pulse-pin", "4", "--tb-host", "127.0.0.1", "--tb-port", str(port), "--force",
            "--set", "tb_tls=false", "--set", "tb_plain_ok=true", "--set", "publish_interval_s=2",
            "--set", "health_interval_s=0", "--set", "persist_interval_s=10"]
    for k, v in extra.items():
        args += ["--set", "%s=%s" % (k, v)]
    r = meterconfig(*args)
    assert r.returncode == 0, r.stderr
    return str(tmp_path / "devices" / "meter-0077.json")


def record(board):
    path = os.path.join(board.root, "state", "pulses.json")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def test_index_is_written_as_the_meter_writes_it_and_the_meter_continues_from_it(tmp_path, board):
    cfg_path = make_config(tmp_path)
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="1234567")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pulse index set to 1234567 (1234.567 kWh at 1000 pulses per kWh); the board had 0" \
        in r.stdout
    assert "no pulse index on the board" in r.stdout
    raw = record(board)
    assert raw == deploytool.index_record(1234567) == b'{"index": 1234567}\n%08x\n' % (
        __import__("binascii").crc32(b'{"index": 1234567}'))
    assert not os.path.exists(os.path.join(board.root, "state", "pulses.tmp"))
    assert wait_until(lambda: "fakeboard: hard reset" in board.events())
    r = make("status", PORT=board.port)  # firmware/report.py reads it with the meter's Store
    assert "pulse index       1234567 (1234.567 kWh)" in r.stdout, r.stdout

    # The meter boots from it and the server sees the register where the old board left it.
    sim = TBSim(profiles=[Profile(KEY, SECRET)], provision_close_s=5.0)
    sim.start()
    try:
        cfg = json.load(open(cfg_path))
        cfg["tb_port"] = sim.mqtt_port
        m = VirtualMeter(str(tmp_path / "run"), cfg, device_dir=board.root,
                         files={"state/pulses.json": raw})
        try:
            m.power_on()
            assert m.wait_for(r"pulse index 1234567", 20), m.text()
            latest = lambda: (sim.device("meter-0077") or {}).get("latestTelemetry", {})  # noqa: E731
            assert sim.wait_for(lambda: latest().get("pulses") == 1234567, 30), m.text()
            assert latest()["energy_kwh"] == 1234.567
            for _ in range(3):  # on flash within persist_interval_s (10 s here), then reported
                m.pulse(1)
                time.sleep(0.05)  # real pulses: further apart than the 15 ms debounce
            assert sim.wait_for(lambda: latest().get("pulses") == 1234570, 30), m.text()
        finally:
            m.close()
    finally:
        sim.stop()


def test_kwh_is_converted_exactly_with_pulses_per_kwh(tmp_path, board):
    cfg_path = make_config(tmp_path, pulses_per_kwh=800)
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, KWH="12345.675")
    assert r.returncode == 0, r.stdout + r.stderr
    assert record(board) == deploytool.index_record(9876540)  # 12345.675 * 800, exactly
    assert "pulse index set to 9876540 (12345.675 kWh at 800 pulses per kWh)" in r.stdout


@pytest.mark.parametrize("variables, message", [
    ({"KWH": "12345.6789"}, "KWH=12345.6789 is not a whole number of pulses at 1000 pulses per kWh"),
    ({"KWH": "1e6"}, "KWH=1e6: must be a decimal number of kWh"),
    ({"INDEX": "-5"}, "INDEX=-5: must be a whole number of pulses"),
    ({"INDEX": "12.5"}, "INDEX=12.5: must be a whole number of pulses"),
    ({"INDEX": "10", "KWH": "1"}, "give INDEX= or KWH=, not both"),
])
def test_a_bad_index_is_refused_before_the_board_is_touched(tmp_path, board, variables, message):
    r = make("deploy", PORT=board.port, CONFIG=make_config(tmp_path), **variables)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert board.files() == {} and board.events() == []


def test_a_smaller_index_than_the_board_has_is_refused_unless_forced(tmp_path, board):
    cfg_path = make_config(tmp_path)
    assert make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="500000").returncode == 0
    before = {rel: open(p, "rb").read() for rel, p in board.files().items()}
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="1000")
    assert r.returncode != 0
    assert ("the board already counts 500000 pulses (500 kWh), more than 1000 (1 kWh): the server "
            "would see the register go backwards. Nothing was changed") in r.stderr, r.stderr
    assert {rel: open(p, "rb").read() for rel, p in board.files().items()} == before
    # The same or a larger index is a normal redeploy.
    assert make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="500000").returncode == 0
    assert make("deploy", PORT=board.port, CONFIG=cfg_path, KWH="600").returncode == 0
    assert record(board) == deploytool.index_record(600000)
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="1000", FORCE="1")
    assert r.returncode == 0, r.stderr
    assert "pulse index set to 1000 (1 kWh at 1000 pulses per kWh); the board had 600000 (FORCE)" \
        in r.stdout
    assert record(board) == deploytool.index_record(1000)
    # Without INDEX/KWH, deploy leaves the index alone.
    assert make("deploy", PORT=board.port, CONFIG=cfg_path).returncode == 0
    assert record(board) == deploytool.index_record(1000)


def test_an_unreadable_record_counts_as_zero_as_for_the_meter(tmp_path, board):
    os.makedirs(os.path.join(board.root, "state"))
    with open(os.path.join(board.root, "state", "pulses.json"), "wb") as f:
        f.write(b'{"index": 99999999}\n00000000\n')  # CRC mismatch: the meter starts at 0
    r = make("deploy", PORT=board.port, CONFIG=make_config(tmp_path), INDEX="42")
    assert r.returncode == 0, r.stderr
    assert "the pulse index record on the board is unreadable (checksum mismatch); the meter " \
        "would start at 0" in r.stdout, r.stdout
    assert record(board) == deploytool.index_record(42)


def test_the_index_is_not_set_when_the_record_changed_since_the_probe(tmp_path, board, monkeypatch):
    cfg_path = make_config(tmp_path)
    assert make("deploy", PORT=board.port, CONFIG=cfg_path, INDEX="700").returncode == 0
    real_probe = deploytool.probe

    def probe_then_the_meter_counts(port, paths):
        info = real_probe(port, paths)
        with open(os.path.join(board.root, "state", "pulses.json"), "wb") as f:
            f.write(deploytool.index_record(900))  # a meter restarted by its watchdog
        return info

    monkeypatch.setattr(deploytool, "probe", probe_then_the_meter_counts)
    with pytest.raises(deploytool.DeployError, match="changed during the deploy"):
        deploytool.deploy(board.port, cfg_path, index="800", log=lambda *_: None)
    assert record(board) == deploytool.index_record(900)
