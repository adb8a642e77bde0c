"""Telemetry and client attributes: accepted shapes, ts, value typing, validation failures (docs/thingsboard.md §3, §5)."""
import time

import pytest
from rawmqtt import PINGREQ, RawClient, publish_packet
from tbsim import Profile

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"


@pytest.fixture
def device(sim):
    sim.add_device("meter-1", token="tok-1")
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", "tok-1") == (0x20, b"\x00\x00")
    yield c
    c.close()


def send(c, payload, topic=TELEMETRY, qos=1, packet_id=1):
    c.send(publish_packet(topic, payload, qos=qos, packet_id=packet_id))
    if qos:
        return c.read_packet()
    return None


def test_plain_object_is_stored_at_server_time_in_ms(sim, device):
    before = int(time.time() * 1000)
    assert send(device, '{"temp":21.5,"count":3}') == (0x40, b"\x00\x01")
    after = int(time.time() * 1000)
    [entry] = sim.telemetry("meter-1")
    assert entry["values"] == {"temp": 21.5, "count": 3}
    assert before <= entry["ts"] <= after


def test_puback_only_after_acceptance(sim, device):
    send(device, '{"energy":1}')
    # The PUBACK has been read, so the data must already be stored (TB acks after the queue accepted it).
    assert sim.telemetry("meter-1") and sim.device("meter-1")["telemetryCount"] == 1


def test_ts_values_form_and_array_mixing(sim, device):
    send(device, '[{"ts":1700000000000,"values":{"a":1},"ignored":5},{"b":2},{"ts":1700000000001.9,"values":{}}]')
    t = sim.telemetry("meter-1")
    assert t[0] == {"ts": 1700000000000, "values": {"a": 1}}
    assert t[1]["values"] == {"b": 2} and t[1]["ts"] > 1700000000001
    assert t[2] == {"ts": 1700000000001, "values": {}}        # decimals truncated


def test_ts_alone_is_an_ordinary_key_and_string_ts_is_accepted(sim, device):
    send(device, '{"ts":5}')
    send(device, '{"ts":"1700000000123","values":{"v":1}}', packet_id=2)
    t = sim.telemetry("meter-1")
    assert t[0]["values"] == {"ts": 5}
    assert t[1] == {"ts": 1700000000123, "values": {"v": 1}}


def test_value_typing(sim, device):
    send(device, '{"b":true,"l":42,"d":42.0,"e":1e3,"f":1.25e1,"s":"text","n":"25","nd":"1.5",'
                 '"big":99999999999999999999,"prec":0.12345678901234567890,"obj":{"x":[1,2]},"arr":[1],'
                 '"nul":null,"lead":"007","exp":"1e3","neg":-7}')
    values = sim.telemetry("meter-1")[0]["values"]
    assert values == {
        "b": True, "l": 42, "d": 42.0, "e": 1000, "f": 12.5, "s": "text",
        "n": 25, "nd": 1.5,                                   # type cast of numeric strings
        "big": "99999999999999999999",                        # beyond int64: stored as text
        "prec": "0.12345678901234567890",                     # scale > 16: stored as text
        "obj": {"x": [1, 2]}, "arr": [1],                     # JSON values
        "lead": 7, "exp": "1e3",                              # isParsable takes no exponent
        "neg": -7,
    }
    assert isinstance(values["d"], float) and isinstance(values["l"], int)
    assert "nul" not in values                               # JSON null silently skipped


def test_latest_values_and_count_in_device_dict(sim, device):
    send(device, '{"ts":2000,"values":{"k":"new"}}')
    send(device, '{"ts":1000,"values":{"k":"old"}}', packet_id=2)
    d = sim.device("meter-1")
    assert d["latestTelemetry"] == {"k": "new"} and d["telemetryCount"] == 2


@pytest.mark.parametrize("payload", [
    "not json", "", "5", "null", '"str"', "[1]", '[{"a":1}, 2]', '{"ts":1,"values":5}',
    '{"ts":1,"values":null}', '{"ts":[1,2],"values":{}}', '{"a":1} {"b":2}',
])
def test_invalid_payload_closes_by_default_without_puback(sim, device, payload):
    device.send(publish_packet(TELEMETRY, payload, qos=1, packet_id=1))
    assert device.expect_closed()
    assert sim.telemetry("meter-1") == []
    assert sim.events("close")[-1]["reason"] == "validation"


def test_invalid_qos0_closes_too(sim, device):
    device.send(publish_packet(TELEMETRY, "nope", qos=0))
    assert device.expect_closed()


@pytest.fixture
def lenient_device(make_sim):
    sim = make_sim(profiles=[Profile("k", "s", puback_on_validation_failure=True)])
    sim.add_device("meter-1", profile_key="k", token="tok-1")
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", "tok-1") == (0x20, b"\x00\x00")
    yield sim, c
    c.close()


def test_puback_on_validation_failure_option_acks_and_drops(lenient_device):
    sim, c = lenient_device
    assert send(c, "garbage", packet_id=7) == (0x40, b"\x00\x07")      # plain PUBACK, like success
    assert send(c, "[1]", topic=ATTRIBUTES, packet_id=8) == (0x40, b"\x00\x08")
    assert send(c, '{"ok":1}', packet_id=9) == (0x40, b"\x00\x09")      # session still usable
    assert [e["values"] for e in sim.telemetry("meter-1")] == [{"ok": 1}]
    rejected = [e for e in sim.events("publish") if not e["accepted"]]
    assert [e["reason"] for e in rejected] == ["validation", "validation"]


def test_puback_option_does_not_save_qos0(lenient_device):
    sim, c = lenient_device
    c.send(publish_packet(TELEMETRY, "garbage", qos=0))
    assert c.expect_closed()


@pytest.mark.parametrize("payload", ['{"ts":"abc","values":{"a":1}}', '{"ts":null,"values":{}}',
                                     '{"ts":true,"values":{}}', '{"ts":NaN,"values":{}}'])
def test_runtime_errors_close_even_with_puback_option(lenient_device, payload):
    sim, c = lenient_device
    c.send(publish_packet(TELEMETRY, payload, qos=1, packet_id=3))
    assert c.expect_closed()
    assert sim.events("close")[-1]["reason"] == "runtime-error"


def test_empty_array_with_qos1_never_gets_puback(sim, device):
    device.send(publish_packet(TELEMETRY, "[]", qos=1, packet_id=4))
    assert device.expect_silence(0.4)
    device.send(PINGREQ)
    assert device.read_packet() == (0xD0, b"")


def test_empty_object_is_acked(sim, device):
    assert send(device, "{}") == (0x40, b"\x00\x01")


def test_qos2_publish_gets_a_puback_not_pubrec(sim, device):
    device.send(publish_packet(TELEMETRY, '{"q":2}', qos=2, packet_id=11))
    assert device.read_packet() == (0x40, b"\x00\x0b")
    assert sim.telemetry("meter-1")[0]["values"] == {"q": 2}


def test_unknown_topic_is_acked_and_dropped(sim, device):
    assert send(device, '{"a":1}', topic="v1/devices/me/telemetryy") == (0x40, b"\x00\x01")
    assert send(device, "anything", topic="some/other/topic", packet_id=2) == (0x40, b"\x00\x02")
    device.send(PINGREQ)
    assert device.read_packet() == (0xD0, b"")
    assert sim.telemetry("meter-1") == []
    assert sim.events("publish")[-1]["reason"] == "unknown-topic"


def test_client_attributes_are_typed_and_stored(sim, device):
    assert send(device, '{"fw":"1.2.3","fwNum":"2","on":true}', topic=ATTRIBUTES) == (0x40, b"\x00\x01")
    assert sim.device("meter-1")["clientAttributes"] == {"fw": "1.2.3", "fwNum": 2, "on": True}
    assert sim.events("attributes")[-1]["values"]["fw"] == "1.2.3"


def test_attributes_array_is_invalid(sim, device):
    device.send(publish_packet(ATTRIBUTES, '[{"a":1}]', qos=1, packet_id=1))
    assert device.expect_closed()


def test_v2_short_topics(sim, device):
    assert send(device, '{"s":1}', topic="v2/t") == (0x40, b"\x00\x01")
    assert send(device, '{"a":1}', topic="v2/a/j", packet_id=2) == (0x40, b"\x00\x02")
    assert sim.telemetry("meter-1")[0]["values"] == {"s": 1}
    assert sim.device("meter-1")["clientAttributes"] == {"a": 1}


def test_mqtt5_invalid_qos1_gets_puback_0x99_and_stays(sim):
    sim.add_device("v5", token="tok-5")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "tok-5", level=5) == (0x20, b"\x00\x00\x00")
        c.send(publish_packet(TELEMETRY, "bad", qos=1, packet_id=2, level=5))
        assert c.read_packet() == (0x40, b"\x00\x02\x99\x00")
        c.send(publish_packet("unknown/topic", "x", qos=1, packet_id=3, level=5))
        assert c.read_packet() == (0x40, b"\x00\x03\x90\x00")
        c.send(publish_packet(TELEMETRY, '{"a":1}', qos=1, packet_id=4, level=5))
        assert c.read_packet() == (0x40, b"\x00\x04")               # success: short form
        c.send(publish_packet(TELEMETRY, "bad", qos=0, level=5))
        assert c.read_packet() == (0xE0, b"\x99\x00")               # v5: DISCONNECT with the reason
        assert c.expect_closed()


def test_retain_flag_is_ignored(sim, device):
    device.send(publish_packet(TELEMETRY, '{"r":1}', qos=1, packet_id=1, retain=True))
    assert device.read_packet() == (0x40, b"\x00\x01")
    assert sim.telemetry("meter-1")[0]["values"] == {"r": 1}


def test_gateway_topic_from_a_plain_device_gets_no_puback(sim, device):
    device.send(publish_packet("v1/gateway/telemetry", '{"d":[{"a":1}]}', qos=1, packet_id=5))
    assert device.expect_silence(0.3)
    device.send(PINGREQ)
    assert device.read_packet() == (0xD0, b"")
    assert sim.events("publish")[-1]["reason"] == "gateway-topic"
