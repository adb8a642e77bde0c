"""The firmware's title and version: reported to ThingsBoard as time series once per firmware
and device (docs/thingsboard.md §14.6), and shown by the status RPC and `make status`."""

import json
import os

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import report, states as M, version
from firmware.store import Store

TELE = "v1/devices/me/telemetry"
RPC = "v1/devices/me/rpc/request/"
NAME = "meter-a1b2c3d4e5f6"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def in_run(rig):
    return rig.meter.state == M.RUN


def fw_reports(broker):
    """(token, payload, qos) of every firmware report the broker received."""
    out = []
    for (_c, user, topic, payload, qos) in broker.published:
        if topic == TELE:
            body = json.loads(payload)
            if isinstance(body, dict) and "current_fw_version" in body:
                out.append((user, body, qos))
    return out


def token():
    return Store(None).read("creds")["token"]


def test_reported_once_as_telemetry_at_qos_1_and_not_again_after_a_reboot():
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig) and fw_reports(b))
    assert fw_reports(b) == [(token(), {"current_fw_title": "meter-firmware",
                                        "current_fw_version": "dev"}, 1)]
    assert "run: firmware meter-firmware dev reported (current_fw_title, current_fw_version)" \
        in rig.text()
    # Not a client attribute: ThingsBoard's firmware dashboard reads time series.
    assert all("current_fw_version" not in a for a in b.messages("v1/devices/me/attributes"))
    rig.run(10_000)
    for _ in range(2):
        rig.cut_power()
        rig.power_up()
        assert rig.run(60_000, lambda: in_run(rig))
        rig.run(10_000)
    assert len(fw_reports(b)) == 1


def test_a_new_firmware_version_is_reported_after_the_update(monkeypatch):
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig) and fw_reports(b))
    rig.cut_power()
    monkeypatch.setattr(version, "VERSION", "1.2.3")  # what an update puts on the board
    rig.power_up()
    assert rig.run(60_000, lambda: len(fw_reports(b)) == 2)
    assert fw_reports(b)[-1][1] == {"current_fw_title": "meter-firmware", "current_fw_version": "1.2.3"}


def test_a_new_device_on_the_platform_gets_the_report_too():
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig) and fw_reports(b))
    first = token()
    b.delete_device(NAME)  # deleted by an administrator: CONNACK 5, provisioned again
    rig.cut_power()
    rig.power_up()
    assert rig.run(120_000, lambda: token() != first and len(fw_reports(b)) == 2)
    assert [u for u, _body, _q in fw_reports(b)] == [first, token()]


def test_marked_only_after_the_puback_and_sent_again_on_the_next_session():
    b = FakeBroker()
    b.puback[TELE] = "drop"  # no PUBACK for telemetry: the session fails
    rig = Rig(b)
    rig.run(30_000)
    assert len(fw_reports(b)) >= 1 and not os.path.exists("state/fwver.json")
    b.puback.pop(TELE)
    n = len(fw_reports(b))
    assert rig.run(120_000, lambda: os.path.exists("state/fwver.json"))
    assert len(fw_reports(b)) == n + 1
    rig.run(10_000)
    assert len(fw_reports(b)) == n + 1


def test_the_reprovisioning_request_resends_it_with_the_attributes():
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig) and fw_reports(b))
    rig.broker.sessions[-1].pending.append(((RPC + "5").encode(), b'{"method":"reprovision"}'))
    assert rig.run(120_000, lambda: len(fw_reports(b)) == 2)


def test_status_rpc_and_make_status_show_title_and_version():
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig) and fw_reports(b))
    b.sessions[-1].pending.append(((RPC + "9").encode(), b'{"method":"status"}'))
    rig.run(500)
    (reply,) = [json.loads(p) for (_c, _u, t, p, _q) in b.published
                if t == "v1/devices/me/rpc/response/9"]
    assert reply["current_fw_title"] == "meter-firmware" and reply["current_fw_version"] == "dev"

    with open("config.json", "w") as f:
        json.dump({k: v for k, v in rig.cfg.items() if v is not None}, f)
    s = report.summary(Store(None))
    assert (s["current_fw_title"], s["current_fw_version"], s["fw_reported"]) == (
        "meter-firmware", "dev", True)
    os.remove("state/fwver.json")
    assert report.summary(Store(None))["fw_reported"] is False
