"""RPC, shared attributes and hostile server input, with the meter running (fake broker)."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware.store import Store

RPC = "v1/devices/me/rpc/request/"
SECRETS = ("wifi-pass-1234", "prov-secret-xyz789", "supplier-secret-0001", "prov-key-abc123")


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def running_rig(**over):
    rig = Rig(FakeBroker(), **over)
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN)
    return rig


def send(rig, topic, payload):
    rig.broker.sessions[-1].pending.append((topic.encode(), payload))
    rig.run(200)


def replies(rig, rid):
    return [json.loads(p) for (_c, _u, t, p, _q) in rig.broker.published
            if t == "v1/devices/me/rpc/response/%s" % rid]


def test_subscribes_to_rpc_and_attributes_and_fetches_the_shared_attributes():
    rig = running_rig()
    s = rig.broker.sessions[-1]
    assert b"v1/devices/me/rpc/request/+" in s.subscribed and b"v1/devices/me/attributes" in s.subscribed
    reqs = [p for (_c, _u, t, p, _q) in rig.broker.published if t == "v1/devices/me/attributes/request/1"]
    # The meter's own shared attribute and the ones ThingsBoard announces a firmware with.
    assert reqs == [b'{"sharedKeys":"publish_interval_s,fw_title,fw_version,fw_size,fw_checksum,'
                    b'fw_checksum_algorithm"}']


def test_status_rpc_reports_state_without_secrets():
    rig = running_rig()
    rig.pulse(7)
    send(rig, RPC + "12", b'{"method":"status","params":{}}')
    (body,) = replies(rig, "12")
    assert body["state"] == "run" and body["pulses"] == 7 and body["energy_kwh"] == "0.007"
    text = json.dumps(body)
    assert all(s not in text for s in SECRETS + (Store(None).read("creds")["token"],))


def test_unknown_and_malformed_rpc_get_error_replies():
    rig = running_rig()
    send(rig, RPC + "1", b'{"method":"format_flash"}')
    send(rig, RPC + "2", b'{"params":1}')
    send(rig, RPC + "3", b"not json")
    send(rig, RPC + "4", b"null")
    assert replies(rig, "1") == [{"error": "unknown method"}]
    assert replies(rig, "2") == replies(rig, "3") == replies(rig, "4") == [{"error": "bad request"}]
    send(rig, RPC + "../../x", b'{"method":"status"}')
    assert not [t for (_c, _u, t, _p, _q) in rig.broker.published if "../" in t]
    assert rig.meter.state == M.RUN


def test_reboot_rpc_saves_the_index_replies_then_resets():
    rig = running_rig()
    rig.pulse(9)
    with pytest.raises(SystemExit):
        send(rig, RPC + "5", b'{"method":"reboot"}')
    assert replies(rig, "5") == [{"result": "rebooting"}]
    assert Store(None).read("pulses")["index"] == 9 and rig.hal.resets == 1


def test_reprovision_rpc_provisions_again_and_keeps_working_credentials():
    rig = running_rig()
    token = Store(None).read("creds")["token"]
    send(rig, RPC + "6", b'{"method":"reprovision"}')
    assert replies(rig, "6") == [{"result": "reprovisioning"}]
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN and len(rig.broker.provision_requests) == 2)
    assert Store(None).read("creds")["token"] == token  # FAILURE (name exists): kept
    assert len(rig.broker.messages("v1/devices/me/attributes")) == 2


def test_publish_interval_shared_attribute_is_validated_and_applied():
    rig = running_rig()
    send(rig, "v1/devices/me/attributes", b'{"publish_interval_s": 30}')
    assert rig.meter.pipeline.interval_s == 30
    send(rig, "v1/devices/me/attributes/response/1", b'{"shared":{"publish_interval_s":120}}')
    assert rig.meter.pipeline.interval_s == 120
    for bad in (b'{"publish_interval_s": 1}', b'{"publish_interval_s": "60"}',
                b'{"publish_interval_s": true}', b'{"publish_interval_s": null}', b"[]", b"\xff"):
        send(rig, "v1/devices/me/attributes", bad)
        assert rig.meter.pipeline.interval_s == 120
    assert "must be an integer" in rig.text()


def test_a_flood_of_messages_is_bounded():
    rig = running_rig()
    s = rig.broker.sessions[-1]
    for i in range(200):
        s.pending.append((("%s%d" % (RPC, i)).encode(), b'{"method":"status"}'))
    rig.run(5_000)
    assert "messages dropped" in rig.text() and rig.meter.state == M.RUN


hostile = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda d: json.dumps(d).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20)),
    st.just(b"[" * 500 + b"]" * 500),
    st.just(b'{"method":' + b'"x"' * 200 + b"}"),
    st.just(b'{"method":"status","params":"\xed\xa0\x80"}'),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=st.sampled_from([RPC + "7", "v1/devices/me/attributes",
                              "v1/devices/me/attributes/response/1", "v1/devices/me/other"]),
       payload=hostile)
def test_hostile_input_on_every_topic_never_stops_the_meter(tmp_path_factory, topic, payload):
    import os
    os.chdir(tmp_path_factory.mktemp("fuzz"))
    rig = running_rig()
    before = rig.pulses.index
    send(rig, topic, payload)
    rig.pulse(3)
    assert rig.meter.state == M.RUN and rig.pulses.index == before + 3
    assert all(s not in rig.text() for s in SECRETS)
