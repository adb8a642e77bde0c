"""A device profile's own telemetry and attributes topic filters, matched as ThingsBoard matches them
(MqttTopicFilterFactory, warts included), and what the default topics do then (PUBACK, dropped)."""
import json

import pytest
import requests
from rawmqtt import RawClient, parse_publish, publish_packet, subscribe_packet

from tbsim import Profile
from tbsim.topics import profile_filter


def connected(sim, profile, token="tok-1", name="meter-1"):
    sim.add_profile(profile)
    sim.add_device(name, profile_key=profile.key, token=token)
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", token) == (0x20, b"\x00\x00")
    return c


def send(c, topic, payload, packet_id=1):
    c.send(publish_packet(topic, payload, qos=1, packet_id=packet_id))
    return c.read_packet()


@pytest.mark.parametrize("text,topic,matches", [
    ("meters/+/data", "meters/m1/data", True),
    ("meters/+/data", "meters//data", False),          # "+" needs a character, unlike MQTT
    ("meters/#", "meters", True),                      # "/#" also matches the parent
    ("meters/#", "meters/a/b", True),
    ("meters/#", "metersX", False),
    ("a#", "a#", True), ("a#", "ab", False),           # "#" not after "/" stays literal
    ("dev+/t", "devABC/t", True),                      # "+" inside a level: a fragment wildcard
    ("a.b/+", "aXb/1", True),                          # "." is a regex metacharacter, not escaped
    ("exact/topic", "exact/topic", True), ("exact/topic", "exact/topic/x", False),
    ("#", "anything/at/all", True),
])
def test_filter_matching_as_thingsboard_does(text, topic, matches):
    assert profile_filter(text)(topic) is matches


def test_filter_that_is_no_pattern_is_refused():
    with pytest.raises(ValueError):
        Profile("k", "s", telemetry_topic="a/(+")


def test_custom_telemetry_topic_stores_and_the_default_topic_is_acked_then_dropped(sim):
    c = connected(sim, Profile("pk", "ps", telemetry_topic="meters/+/data"))
    assert send(c, "meters/m1/data", '{"energy":1}') == (0x40, b"\x00\x01")
    assert send(c, "v1/devices/me/telemetry", '{"energy":2}', 2) == (0x40, b"\x00\x02")   # acked...
    assert send(c, "meters//data", '{"energy":3}', 3) == (0x40, b"\x00\x03")
    assert [e["values"] for e in sim.telemetry("meter-1")] == [{"energy": 1}]              # ...and dropped
    reasons = [e.get("reason") for e in sim.events("publish")]
    assert reasons == [None, "unknown-topic", "unknown-topic"]
    c.close()


def test_custom_attributes_topic_and_the_parent_match(sim):
    c = connected(sim, Profile("pk", "ps", attributes_topic="meters/attrs/#"))
    assert send(c, "meters/attrs", '{"CUPs":"ES1"}') == (0x40, b"\x00\x01")
    assert send(c, "v1/devices/me/attributes", '{"lost":1}', 2) == (0x40, b"\x00\x02")
    assert sim.device("meter-1")["clientAttributes"] == {"CUPs": "ES1"}
    c.close()


def test_a_broad_filter_swallows_rpc_replies_and_attribute_requests(sim):
    # The profile's filters are tested before the fixed topics: "#" makes everything telemetry.
    c = connected(sim, Profile("pk", "ps", telemetry_topic="#"))
    assert send(c, "v1/devices/me/attributes/request/1", '{"sharedKeys":"a"}') == (0x40, b"\x00\x01")
    assert c.expect_silence(0.3)                                   # no attribute response
    assert send(c, "v1/devices/me/rpc/response/0", '{"ok":1}', 2) == (0x40, b"\x00\x02")
    assert [e["values"] for e in sim.telemetry("meter-1")] == [{"sharedKeys": "a"}, {"ok": 1}]
    c.close()


def test_custom_subscribe_filter_subscribes_but_pushes_use_the_v1_topic(sim):
    c = connected(sim, Profile("pk", "ps", attributes_subscribe_topic="meters/+/config"))
    c.send(subscribe_packet(1, [("meters/+/config", 1)]))
    assert c.read_packet() == (0x90, b"\x00\x01\x01")
    sim.push_shared_attributes("meter-1", {"interval": 30})
    topic, _, _, payload = parse_publish(*c.read_packet())
    assert (topic, payload) == ("v1/devices/me/attributes", b'{"interval":30}')
    c.close()


def test_a_profile_change_applies_to_a_live_session(sim):
    c = connected(sim, Profile("pk", "ps"))
    assert send(c, "v1/devices/me/telemetry", '{"a":1}') == (0x40, b"\x00\x01")
    r = requests.post(f"http://127.0.0.1:{sim.http_port}/api/profiles", timeout=10,
                      json={"key": "pk", "secret": "ps", "telemetryTopic": "custom/t"})
    assert r.status_code == 200 and r.json()["telemetryTopic"] == "custom/t"
    assert send(c, "v1/devices/me/telemetry", '{"a":2}', 2) == (0x40, b"\x00\x02")
    assert send(c, "custom/t", '{"a":3}', 3) == (0x40, b"\x00\x03")
    assert [e["values"]["a"] for e in sim.telemetry("meter-1")] == [1, 3]
    listed = requests.get(f"http://127.0.0.1:{sim.http_port}/api/profiles", timeout=10).json()
    assert [p["telemetryTopic"] for p in listed if p["key"] == "pk"] == ["custom/t"]
    c.close()


def test_blank_filters_read_as_the_defaults_and_survive_the_state_file(tmp_path, make_sim):
    profile = Profile("pk", "ps", telemetry_topic="  ", attributes_topic="m/a")
    assert profile.telemetry_topic == "v1/devices/me/telemetry"
    path = str(tmp_path / "state.json")
    sim = make_sim(profiles=[profile], state_file=path)
    sim.stop()
    saved = json.load(open(path))["profiles"][0]
    assert saved["attributesTopic"] == "m/a" and saved["telemetryTopic"] == "v1/devices/me/telemetry"
