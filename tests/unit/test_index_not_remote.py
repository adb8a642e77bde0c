"""The pulse index is the meter's energy register: only a technician on the USB cable sets it
(`make deploy ... INDEX=`, tools/deploy.py). Nothing the platform sends can (docs/deploy.md)."""

import json

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware.store import Store

RPC = "v1/devices/me/rpc/request/"
ATTR = "v1/devices/me/attributes"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_no_rpc_or_shared_attribute_sets_the_index():
    rig = Rig(FakeBroker())
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN)
    rig.pulse(4)
    attempts = [(RPC + "%d" % i, json.dumps({"method": m, "params": p}).encode())
                for i, (m, p) in enumerate([
                    ("set_index", {"index": 10 ** 9}), ("setIndex", 10 ** 9), ("set_pulses", 5),
                    ("set_kwh", {"kwh": 99999}), ("index", 0), ("reset_index", {}),
                    ("status", {"index": 10 ** 9, "pulses": 10 ** 9})], 1)]
    attempts += [(ATTR, json.dumps({k: 10 ** 9}).encode())
                 for k in ("pulses", "index", "pulse_index", "energy_kwh", "kwh")]
    attempts += [("v1/devices/me/attributes/response/1",
                  json.dumps({"shared": {"pulses": 10 ** 9, "index": 0}}).encode())]
    session = rig.broker.sessions[-1]
    for topic, payload in attempts:
        session.pending.append((topic.encode(), payload))
        rig.run(300)
    replies = [json.loads(p) for (_c, _u, t, p, _q) in rig.broker.published
               if t.startswith("v1/devices/me/rpc/response/")]
    assert [r for r in replies if "error" in r] == [{"error": "unknown method"}] * 6
    rig.pulse(1)
    rig.meter.shutdown()
    assert rig.pulses.index == 5 and Store(None).read("pulses") == {"index": 5}
    assert rig.meter.state == M.RUN
