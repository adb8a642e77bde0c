"""ThingsBoard behaviours a friendly broker would not have (issue 17, "tbsim closer to ThingsBoard"):
RPC redelivery under BURST, PUBACK before key validation, attribute-request parsing, what Gson
accepts, and REST-set shared attributes typed before they are pushed."""
import json
import threading

import pytest
import requests
from rawmqtt import RawClient, parse_publish, puback_packet, publish_packet, subscribe_packet

RPC_SUB = "v1/devices/me/rpc/request/+"


def session(sim, token="tok-1"):
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", token) == (0x20, b"\x00\x00")
    return c


def subscribe_rpc(c, packet_id=1):
    c.send(subscribe_packet(packet_id, [(RPC_SUB, 1)]))
    assert c.read_packet() == (0x90, bytes([0, packet_id, 1]))


def rpc_in_thread(sim, method, params, timeout_s):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("result", sim.rpc("meter-1", method, params, timeout_s)))
    t.start()
    return t, box


@pytest.fixture
def device(sim):
    sim.add_device("meter-1", token="tok-1")
    return sim


# ---- RPC: BURST redelivery (DeviceActorMessageProcessor.sendPendingRequests) ------------------------

def test_delivered_but_unanswered_rpc_is_sent_again_to_the_next_session(device):
    sim = device
    first = session(sim)
    subscribe_rpc(first)
    t, box = rpc_in_thread(sim, "reboot", {"delay": 1}, 10)
    topic, _, packet_id, payload = parse_publish(*first.read_packet())
    assert topic == "v1/devices/me/rpc/request/0"
    first.send(puback_packet(packet_id))                          # delivered...
    assert sim.wait_for(lambda: sim.events("rpc-delivered"), 5)
    first.close()                                                 # ...but the device reset before replying

    second = session(sim)
    subscribe_rpc(second)
    again = parse_publish(*second.read_packet())
    assert (again[0], again[3]) == (topic, payload)               # same request id, same body
    second.send(publish_packet("v1/devices/me/rpc/response/0", '{"ok":true}', qos=1, packet_id=9))
    assert second.read_packet() == (0x40, b"\x00\x09")
    t.join(10)
    assert box["result"] == {"ok": True}
    assert [e["resend"] for e in sim.events("rpc-sent")] == [False, True]

    third = session(sim)                                          # answered: never sent again
    subscribe_rpc(third)
    assert third.expect_silence(0.4)
    second.close()
    third.close()


def test_every_pending_rpc_is_resent_in_order_until_it_times_out(device):
    sim = device
    first = session(sim)
    subscribe_rpc(first)
    threads = [rpc_in_thread(sim, f"m{i}", None, 1.5)[0] for i in range(2)]
    ids = sorted(parse_publish(*first.read_packet())[0] for _ in range(2))
    assert ids == ["v1/devices/me/rpc/request/0", "v1/devices/me/rpc/request/1"]
    first.close()
    second = session(sim)
    subscribe_rpc(second)
    assert [parse_publish(*second.read_packet())[0] for _ in range(2)] == ids   # original order
    second.close()
    for t in threads:
        t.join(10)
    third = session(sim)                                          # timed out: gone
    subscribe_rpc(third)
    assert third.expect_silence(0.4)
    third.close()


# ---- PUBACK, then key validation (KvUtils) ----------------------------------------------------------

@pytest.mark.parametrize("payload", [
    '{" ":1,"ok":2}',                                      # blank key
    '{"%s":1,"ok":2}' % ("k" * 256),                      # longer than 255
    '{"%s":1}' % ("\\ud83d\\ude00" * 128),                # 128 characters, 256 UTF-16 units
    '{"{{user.name}}":1}',                                # a template expression
    '{"<script>alert(1)</script>":1}',                    # HTML
    '[{"ts":1,"values":{"ok":1}},{"ts":2,"values":{"":2}}]',   # one bad key drops every ts group
])
def test_an_invalid_key_gets_its_puback_and_drops_the_whole_message(device, payload):
    sim = device
    c = session(sim)
    c.send(publish_packet("v1/devices/me/telemetry", payload, qos=1, packet_id=5))
    assert c.read_packet() == (0x40, b"\x00\x05")                 # accepted by the queue
    assert sim.telemetry("meter-1") == []                         # never stored
    assert sim.events("dropped")[-1]["error"].startswith(("Key can't", "Validation error"))
    c.send(publish_packet("v1/devices/me/attributes", '{" ":1,"fw":"x"}', qos=1, packet_id=6))
    assert c.read_packet() == (0x40, b"\x00\x06")
    assert sim.device("meter-1")["clientAttributes"] == {}
    c.close()


def test_a_key_of_exactly_255_characters_is_saved(device):
    sim = device
    c = session(sim)
    c.send(publish_packet("v1/devices/me/telemetry", '{"%s":1,"a < b":2}' % ("k" * 255), qos=1))
    c.read_packet()
    assert sim.telemetry("meter-1")[0]["values"] == {"k" * 255: 1, "a < b": 2}
    c.close()


# ---- attribute requests (JsonMqttAdaptor.processGetAttributeRequestMsg) -----------------------------

def test_attribute_request_keys_are_trimmed_and_empty_names_dropped(device):
    sim = device
    sim.push_shared_attributes("meter-1", {"interval": 30, "mode": "eco"})
    c = session(sim)
    c.send(publish_packet("v1/devices/me/attributes", '{"fw":"v1","hw":"v2"}', qos=1))
    c.read_packet()
    cases = [('{"clientKeys":" fw , ,","sharedKeys":"mode ,"}', {"client": {"fw": "v1"}, "shared": {"mode": "eco"}}),
             ('{"sharedKeys":" , "}', {"shared": {"interval": 30, "mode": "eco"}}),   # only blanks: all of it
             ('{"clientKeys":["fw"]}', {"client": {"fw": "v1"}}),                       # one-element array
             ('{clientKeys: hw}', {"client": {"hw": "v2"}})]                            # lenient JSON
    for i, (payload, expected) in enumerate(cases, start=1):
        c.send(publish_packet(f"v1/devices/me/attributes/request/{i}", payload, qos=0))
        topic, _, _, body = parse_publish(*c.read_packet())
        assert topic.endswith(f"/{i}") and json.loads(body) == expected, payload
    c.close()


@pytest.mark.parametrize("payload", ['{"clientKeys":null}', '{"clientKeys":["a","b"]}', '{"sharedKeys":{}}'])
def test_attribute_request_with_a_key_list_gson_cannot_read_is_a_validation_failure(device, payload):
    c = session(device)
    c.send(publish_packet("v1/devices/me/attributes/request/1", payload, qos=1))
    assert c.expect_closed()


# ---- Gson's leniency and what is stored ---------------------------------------------------------------

def test_what_gson_accepts_and_how_it_is_stored(device):
    sim = device
    c = session(sim)
    payloads = ["{v: NaN, w: -Infinity}",                  # unquoted NaN is a string to Gson, not a number
                '{"d":1,"d":2}',                          # duplicate key: the last one wins
                ")]}'\n{\"prefixed\":1}",                 # the non-execute prefix is skipped
                "{'single': 'quoted', n = 0x1F; m => 01}"]  # = => ; separators, hex and 01 are strings
    for i, payload in enumerate(payloads, start=1):
        c.send(publish_packet("v1/devices/me/telemetry", payload, qos=1, packet_id=i))
        assert c.read_packet() == (0x40, bytes([0, i])), payload
    assert [e["values"] for e in sim.telemetry("meter-1")] == [
        {"v": "NaN", "w": "-Infinity"}, {"d": 2}, {"prefixed": 1}, {"single": "quoted", "n": "0x1F", "m": 1}]
    c.close()


def test_null_followed_by_garbage_is_json_null(device):
    c = session(device)
    c.send(publish_packet("v1/devices/me/attributes", "null garbage", qos=1))   # null is not an object
    assert c.expect_closed()
    assert device.events("close")[-1]["reason"] == "validation"


# ---- shared attributes from the REST API (TelemetryController.extractRequestAttributes) ---------------

def test_rest_shared_attributes_are_typed_before_they_are_pushed(device):
    sim = device
    c = session(sim)
    c.send(subscribe_packet(1, [("v1/devices/me/attributes", 1)]))
    c.read_packet()
    url = f"http://127.0.0.1:{sim.http_port}/api/devices/meter-1/attributes/shared"
    r = requests.post(url, data='{"s":"30","e":1e3,"d":5.0,"l":7,"n":null,"j":{"x":[1]}}', timeout=10)
    assert r.status_code == 200
    _, _, _, payload = parse_publish(*c.read_packet())
    assert payload == b'{"s":"30","e":1000.0,"d":5.0,"l":7,"j":{"x":[1]}}'   # null dropped, no string cast
    for bad, message in [('{"big":18446744073709551616}', "Big integer"), ('{" ":1}', "Key cannot be empty"),
                         ('[1]', "not a JSON object"), ('{"{{x}}":1}', "malformed"), ('{"v":NaN}', "Invalid JSON")]:
        r = requests.post(url, data=bad, timeout=10)
        assert r.status_code == 400 and message in r.json()["error"], bad
    assert c.expect_silence(0.3)
    with pytest.raises(ValueError):
        sim.push_shared_attributes("meter-1", {"n": None})         # nothing left to save
    c.close()
