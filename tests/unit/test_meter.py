import json

import pytest

from fakes import FakeBroker
from harness import CUPS, Rig
from firmware import meter as M


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Store writes state/ here: this test's flash


def provisioned_broker(token="tok-AAAA-1111"):
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": token, "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.tokens[token] = "meter-a1b2c3d4e5f6"
    return b


def test_first_boot_provisions_sends_attributes_once_then_telemetry():
    rig = Rig(provisioned_broker())
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN)
    b = rig.broker
    assert b.provision_requests == [{"provisionDeviceKey": "prov-key-abc123",
                                     "provisionDeviceSecret": "prov-secret-xyz789",
                                     "deviceName": "meter-a1b2c3d4e5f6"}]
    attrs = b.messages("v1/devices/me/attributes")
    assert attrs == [{"Power_suppier_secret_key": "supplier-secret-0001", "CUPs": CUPS}]
    rig.pulse(5)
    rig.run(130_000)
    tele = [m for m in b.messages("v1/devices/me/telemetry") if "values" in m]
    assert tele and tele[-1]["values"]["pulses"] == 5
    assert tele[-1]["values"]["energy_kwh"] == 0.005
    assert "prov-secret-xyz789" not in rig.text() and "tok-AAAA-1111" not in rig.text()
