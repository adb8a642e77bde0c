"""Server-to-device traffic: attribute requests, shared-attribute pushes, RPC both ways (docs/thingsboard.md §4)."""
import json
import threading

import pytest
from rawmqtt import RawClient, parse_publish, puback_packet, publish_packet, subscribe_packet, unsubscribe_packet

ATTR = "v1/devices/me/attributes"
RPC_SUB = "v1/devices/me/rpc/request/+"


@pytest.fixture
def device(sim):
    sim.add_device("meter-1", token="tok-1")
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", "tok-1") == (0x20, b"\x00\x00")
    yield c
    c.close()


def subscribe(c, filters, packet_id=1):
    c.send(subscribe_packet(packet_id, filters))
    first, body = c.read_packet()
    assert first == 0x90
    return list(body[2:])


def run_in_thread(fn, *args):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("result", fn(*args)))
    t.start()
    return t, box


def test_subscribe_grants_known_filters_and_refuses_others(sim, device):
    codes = subscribe(device, [(ATTR, 1), (RPC_SUB, 2), ("v1/devices/me/attributes/response/+", 0),
                               ("v1/devices/me/rpc/response/+", 1), ("v1/devices/me/telemetry", 1), ("#", 1)])
    assert codes == [1, 1, 0, 1, 0x80, 0x80]


def test_attribute_request_response_without_subscription(sim, device):
    sim.push_shared_attributes("meter-1", {"interval": 30, "mode": "eco", "ratio": 0.5})
    device.send(publish_packet(ATTR, '{"fw":"1.0.1"}', qos=1, packet_id=1))
    device.read_packet()
    device.send(publish_packet("v1/devices/me/attributes/request/7", '{"clientKeys":"fw","sharedKeys":"interval, mode"}',
                               qos=1, packet_id=2))
    assert device.read_packet() == (0x40, b"\x00\x02")
    topic, qos, packet_id, payload = parse_publish(*device.read_packet())
    assert topic == "v1/devices/me/attributes/response/7" and qos == 1 and packet_id == 1
    assert json.loads(payload) == {"client": {"fw": "1.0.1"}, "shared": {"interval": 30, "mode": "eco"}}


def test_attribute_request_sections(sim, device):
    sim.push_shared_attributes("meter-1", {"a": 1})
    cases = [('{}', {"shared": {"a": 1}}),                      # all of both scopes; empty client omitted
             ('{"sharedKeys":"zzz"}', {}),                       # nothing found
             ('{"sharedKeys":""}', {"shared": {"a": 1}})]        # a given but empty list means all
    for i, (body, expected) in enumerate(cases, start=1):
        device.send(publish_packet(f"v1/devices/me/attributes/request/{i}", body, qos=0))
        topic, _, _, payload = parse_publish(*device.read_packet())
        assert topic.endswith(f"/{i}") and json.loads(payload) == expected


@pytest.mark.parametrize("topic,payload", [("v1/devices/me/attributes/request/x", "{}"),
                                           ("v1/devices/me/attributes/request/1", ""),
                                           ("v1/devices/me/attributes/request/1", "[]")])
def test_bad_attribute_requests_are_validation_failures(sim, device, topic, payload):
    device.send(publish_packet(topic, payload, qos=1))
    assert device.expect_closed()


def test_shared_attribute_push_only_when_subscribed(sim, device):
    sim.push_shared_attributes("meter-1", {"early": 1})
    assert device.expect_silence(0.3)
    assert subscribe(device, [(ATTR, 0)]) == [0]
    sim.push_shared_attributes("meter-1", {"interval": 60, "k": 2.0})
    topic, qos, _, payload = parse_publish(*device.read_packet())
    assert (topic, qos, payload) == (ATTR, 0, b'{"interval":60,"k":2.0}')
    sim.delete_shared_attributes("meter-1", ["k"])
    assert parse_publish(*device.read_packet())[3] == b'{"deleted":["k"]}'
    assert sim.device("meter-1")["sharedAttributes"] == {"early": 1, "interval": 60}
    device.send(unsubscribe_packet(5, [ATTR]))
    assert device.read_packet() == (0xB0, b"\x00\x05")
    sim.push_shared_attributes("meter-1", {"late": 1})
    assert device.expect_silence(0.3)


def test_server_rpc_round_trip_with_qos1_and_packet_ids_from_1(sim, device):
    assert subscribe(device, [(RPC_SUB, 1)]) == [1]
    t, box = run_in_thread(sim.rpc, "meter-1", "setRelay", {"on": True}, 5)
    topic, qos, packet_id, payload = parse_publish(*device.read_packet())
    assert topic == "v1/devices/me/rpc/request/0" and qos == 1 and packet_id == 1
    assert payload == b'{"method":"setRelay","params":{"on":true}}'
    device.send(puback_packet(packet_id))
    device.send(publish_packet("v1/devices/me/rpc/response/0", '{"relay":"on"}', qos=1, packet_id=3))
    assert device.read_packet() == (0x40, b"\x00\x03")
    t.join(5)
    assert box["result"] == {"relay": "on"}
    assert sim.wait_for(lambda: sim.events("rpc-delivered"), 2)
    # Next RPC: next request id and next packet id.
    t, box = run_in_thread(sim.rpc, "meter-1", "ping", None, 5)
    topic, _, packet_id, payload = parse_publish(*device.read_packet())
    assert topic.endswith("/1") and packet_id == 2 and payload == b'{"method":"ping","params":null}'
    device.send(publish_packet("v1/devices/me/rpc/response/1", "pong-text", qos=0))
    t.join(5)
    assert box["result"] == "pong-text"


def test_server_rpc_timeout(sim, device):
    assert sim.rpc("meter-1", "noSub", {}, timeout_s=0.3) == {"error": "timeout"}
    assert sim.events("rpc-timeout")


def test_pending_rpc_is_delivered_when_device_subscribes(sim, device):
    t, box = run_in_thread(sim.rpc, "meter-1", "later", {"x": 1}, 5)
    assert sim.wait_for(lambda: sim.events("rpc"), 2)
    assert subscribe(device, [(RPC_SUB, 0)]) == [0]
    topic, qos, packet_id, payload = parse_publish(*device.read_packet())
    assert qos == 0 and packet_id is None and json.loads(payload)["method"] == "later"
    device.send(publish_packet(topic.replace("request", "response"), '{"done":1}', qos=0))
    t.join(5)
    assert box["result"] == {"done": 1}


def test_get_session_limits_builtin(make_sim):
    sim = make_sim(rate_limits="free")
    sim.add_device("m", token="t")
    with RawClient(sim.mqtt_port) as c:
        c.connect("cid", "t")
        c.send(publish_packet("v1/devices/me/rpc/request/5", '{"method":"getSessionLimits","params":{}}', qos=1, packet_id=1))
        assert c.read_packet() == (0x40, b"\x00\x01")
        topic, _, _, payload = parse_publish(*c.read_packet())
        assert topic == "v1/devices/me/rpc/response/5"
        assert json.loads(payload) == {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {
            "messages": "50:1,1000:60,15000:3600", "telemetryMessages": "50:1,600:60,7000:3600",
            "telemetryDataPoints": "100:1,2000:60,15000:3600"}}


def test_client_side_rpc_timeout_and_handler(make_sim):
    sim = make_sim(client_rpc_timeout_s=0.3)
    sim.add_device("m", token="t")
    with RawClient(sim.mqtt_port) as c:
        c.connect("cid", "t")
        c.send(publish_packet("v1/devices/me/rpc/request/1", '{"method":"getTime","params":{}}', qos=0))
        topic, _, _, payload = parse_publish(*c.read_packet(timeout=2))
        assert topic == "v1/devices/me/rpc/response/1" and payload == b'{"error":"timeout"}'
        sim.client_rpc_handler = lambda device, method, params: {"time": 123} if method == "getTime" else None
        c.send(publish_packet("v1/devices/me/rpc/request/2", '{"method":"getTime"}', qos=0))
        assert parse_publish(*c.read_packet())[3] == b'{"time":123}'


def test_client_rpc_without_method_closes_even_with_puback_option(make_sim):
    from tbsim import Profile
    sim = make_sim(profiles=[Profile("k", "s", puback_on_validation_failure=True)])
    sim.add_device("m", profile_key="k", token="t")
    with RawClient(sim.mqtt_port) as c:
        c.connect("cid", "t")
        c.send(publish_packet("v1/devices/me/rpc/request/1", '{"params":{}}', qos=1))
        assert c.expect_closed()


def test_delete_device_closes_its_session(sim, device):
    assert sim.delete_device("meter-1") is True
    assert device.expect_closed()
    assert sim.events("close")[-1]["reason"] == "deleted"
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "tok-1") == (0x20, b"\x00\x05")


def test_ota_request_without_package_gets_error_and_close(sim, device):
    device.send(publish_packet("v2/fw/request/1/chunk/0", "1024", qos=1))
    topic, _, _, payload = parse_publish(*device.read_packet())
    assert (topic, payload) == ("v2/fw/error", b"NOT_FOUND")
    assert device.expect_closed()
