"""Provisioning over MQTT (docs/thingsboard.md §2): sessions, replies, both strategies."""
import json
import time

import pytest
KEY, SECRET = "meter-key", "meter-secret"     # the profile conftest.make_sim installs
from rawmqtt import PINGREQ, RawClient, parse_publish, publish_packet, subscribe_packet, unsubscribe_packet
from tbsim import Profile

REQ = "/provision/request"
NOT_FOUND = b'{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}'
FAILURE = b'{"errorMsg":"Failed to provision device!","status":"FAILURE"}'


def request(**fields):
    body = {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def provision(sim, payload, qos=1, subscribe=None):
    """Send one request in a fresh provision session; return (client, reply publish tuple)."""
    c = RawClient(sim.mqtt_port)
    assert c.connect("provision") == (0x20, b"\x00\x00")
    if subscribe is not None:
        c.send(subscribe_packet(1, [("/provision/response", subscribe)]))
        assert c.read_packet() == (0x90, bytes([0, 1, min(subscribe, 1)]))
    c.send(publish_packet(REQ, payload, qos=qos, packet_id=42))
    if qos:
        assert c.read_packet() == (0x40, b"\x00\x2a")          # PUBACK before the response
    first, body = c.read_packet()
    return c, parse_publish(first, body)


def test_reply_qos1_when_never_subscribed_with_exact_success_string(sim):
    c, (topic, qos, packet_id, payload) = provision(sim, request(deviceName="meter-1"))
    token = sim.device("meter-1")["credentials"]
    assert topic == "/provision/response" and qos == 1 and packet_id == 1
    assert payload == b'{"credentialsValue":"' + token.encode() + b'","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}'
    assert len(token) == 20 and token.isalnum()
    assert sim.device("meter-1")["serverAttributes"] == {"provisionState": "provisioned"}
    ev = sim.events("provision")[-1]
    assert ev["status"] == "SUCCESS" and ev["deviceName"] == "meter-1"
    assert SECRET not in json.dumps(ev)                      # the secret is masked
    c.close()


def test_the_event_shows_every_secret_masked_as_the_firmware_masks(sim):
    # The profile's key and secret, and the token the device asks for: first and last two
    # characters (the firmware's rule, firmware/log.py mask; tbsim's copy in tbsim/store.py).
    c, (_, _, _, payload) = provision(sim, request(deviceName="meter-2", credentialsType="ACCESS_TOKEN",
                                                   token="device-token-0002"))
    assert b"SUCCESS" in payload
    shown = sim.events("provision")[-1]["request"]
    assert (shown["provisionDeviceKey"], shown["provisionDeviceSecret"], shown["token"]) == \
        ("me...ey", "me...et", "de...02")
    assert shown["deviceName"] == "meter-2" and shown["credentialsType"] == "ACCESS_TOKEN"
    c.close()


def test_reply_uses_granted_qos_of_a_subscription(sim):
    c, (topic, qos, packet_id, _) = provision(sim, request(deviceName="m0"), qos=0, subscribe=0)
    assert qos == 0 and packet_id is None
    c.close()


def test_reply_goes_only_to_the_requesting_connection(sim):
    bystander = RawClient(sim.mqtt_port)
    assert bystander.connect("provision") == (0x20, b"\x00\x00")
    bystander.send(subscribe_packet(1, [("/provision/response", 1)]))
    bystander.read_packet()
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1"))
    assert b"SUCCESS" in payload
    assert bystander.expect_silence(0.3)
    c.close()
    bystander.close()


def test_connection_closed_provision_close_s_after_reply(make_sim):
    sim = make_sim(provision_close_s=0.6)
    c, _ = provision(sim, request(deviceName="m1"))
    t0 = time.monotonic()
    c.send(PINGREQ)                                          # still open and answering right after
    assert c.read_packet() == (0xD0, b"")
    assert c.expect_closed(timeout=3)
    assert 0.45 < time.monotonic() - t0 < 1.5
    assert sim.events("close")[-1]["reason"] == "provision-timeout"


def test_another_request_in_the_same_session_is_processed_again(sim):
    c, (_, _, _, first) = provision(sim, request(deviceName="m1"))
    c.send(publish_packet(REQ, request(deviceName="m1"), qos=1, packet_id=43))
    assert c.read_packet() == (0x40, b"\x00\x2b")
    assert parse_publish(*c.read_packet())[3] == FAILURE     # name exists now
    c.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_other_topic_in_provision_session_closes_without_reply(sim, qos):
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(publish_packet("/provision", request(deviceName="m1"), qos=qos, packet_id=5))
        if qos:
            assert c.read_packet() == (0x40, b"\x00\x05")
        assert c.expect_closed()
    assert sim.device("m1") is None


@pytest.mark.parametrize("payload,puback", [
    ("not json at all {", False),                     # AdaptorException path: no PUBACK
    ("[1, 2]", False),                                # JSON but not an object
    ("", False),
    ('{"provisionDeviceKey": "%s"}' % KEY, True),     # missing key: RuntimeException path, PUBACK first
    ('{"provisionDeviceSecret": "%s"}' % SECRET, True),
    (request(token=None), True),                      # JSON null (ujson.dumps({"token": None}))
    (request(deviceName={"a": 1}), True),             # object value
    (request(credentialsType="ACCESS-TOKEN"), True),  # bad credentialsType text
    (request(credentialsType="access_token"), True),  # case matters (enum valueOf)
    (request(deviceName=["a", "b"]), False),          # array of two: IllegalStateException -> adaptor
])
def test_malformed_requests_close_with_no_reply(sim, payload, puback):
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(subscribe_packet(1, [("/provision/response", 1)]))
        c.read_packet()
        c.send(publish_packet(REQ, payload, qos=1, packet_id=6))
        if puback:
            assert c.read_packet() == (0x40, b"\x00\x06")
        assert c.expect_closed()
    assert sim.devices() == []


def test_lenient_json_is_accepted_like_gson(sim):
    c, (_, _, _, payload) = provision(
        sim, "{provisionDeviceKey: '%s', provisionDeviceSecret: '%s', deviceName: lenient-1}" % (KEY, SECRET))
    assert b'"status":"SUCCESS"' in payload and sim.device("lenient-1") is not None
    c.close()


def test_one_element_array_and_number_values_read_as_strings(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName=["arr-name"], token=12345678))
    assert payload.startswith(b'{"credentialsValue":"12345678"')
    assert sim.device("arr-name")["credentials"] == "12345678"
    c.close()


def test_allow_create_name_exists_is_failure(sim):
    sim.add_device("taken")
    c, (_, _, _, payload) = provision(sim, request(deviceName="taken"))
    assert payload == FAILURE
    c.close()


@pytest.mark.parametrize("fields", [
    dict(provisionDeviceSecret="wrong"),
    dict(provisionDeviceKey="unknown-key"),
    dict(provisionDeviceKey=""),
])
def test_wrong_secret_or_unknown_key_is_not_found(sim, fields):
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1", **fields))
    assert payload == NOT_FOUND
    assert sim.device("m1") is None
    c.close()


def test_blank_name_is_failure_and_missing_name_gets_random_one(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="   "))
    assert payload == FAILURE
    c.close()
    c, (_, _, _, payload) = provision(sim, request())
    assert b"SUCCESS" in payload
    names = [d["name"] for d in sim.devices()]
    assert len(names) == 1 and len(names[0]) == 20 and names[0].isalnum()
    c.close()


def test_name_is_trimmed(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="  padded  "))
    assert b"SUCCESS" in payload and sim.device("padded") is not None
    c.close()


def test_device_supplied_access_token(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1", credentialsType="ACCESS_TOKEN", token="my-own-token"))
    assert payload == b'{"credentialsValue":"my-own-token","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}'
    c.close()
    with RawClient(sim.mqtt_port) as d:
        assert d.connect("x", "my-own-token") == (0x20, b"\x00\x00")


def test_device_supplied_token_already_used_is_failure_and_rolled_back(sim):
    sim.add_device("other", token="dup-token")
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1", token="dup-token"))
    assert payload == FAILURE
    c.close()
    assert sim.device("m1") is None                          # transactional: the name stays free
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1"))
    assert b"SUCCESS" in payload
    c.close()


def test_device_supplied_mqtt_basic_credentials(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="b1", credentialsType="MQTT_BASIC",
                                                   clientId="cid-b1", username="user-b1", password="pw-b1"))
    assert payload == (b'{"credentialsValue":{"clientId":"cid-b1","userName":"user-b1","password":"pw-b1"},'
                       b'"credentialsType":"MQTT_BASIC","status":"SUCCESS"}')
    c.close()
    with RawClient(sim.mqtt_port) as d:
        assert d.connect("cid-b1", "user-b1", "pw-b1") == (0x20, b"\x00\x00")


def test_mqtt_basic_with_client_id_and_password_but_no_username_is_failure(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="b2", credentialsType="MQTT_BASIC",
                                                   clientId="cid", password="pw"))
    assert payload == FAILURE and sim.device("b2") is None
    c.close()


def test_credentials_type_without_credential_fields_keeps_generated_token(sim):
    c, (_, _, _, payload) = provision(sim, request(deviceName="m1", credentialsType="MQTT_BASIC"))
    assert b'"credentialsType":"ACCESS_TOKEN"' in payload
    c.close()


@pytest.fixture
def pre_sim(make_sim):
    return make_sim(profiles=[Profile("pre-key", "pre-secret", strategy="check-pre-provisioned"),
                              Profile("other-key", "other-secret")])


def pre_request(**fields):
    body = {"provisionDeviceKey": "pre-key", "provisionDeviceSecret": "pre-secret"}
    body.update(fields)
    return json.dumps(body)


def test_check_pre_provisioned_success_returns_existing_credentials_once(pre_sim):
    pre_sim.add_device("pre-1", profile_key="pre-key", token="existing-token")
    c, (_, _, _, payload) = provision(pre_sim, pre_request(deviceName="pre-1", token="ignored-token"))
    assert payload == b'{"credentialsValue":"existing-token","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}'
    c.close()
    assert pre_sim.device("pre-1")["serverAttributes"]["provisionState"] == "provisioned"
    c, (_, _, _, payload) = provision(pre_sim, pre_request(deviceName="pre-1"))
    assert payload == FAILURE                                # already provisioned
    c.close()


@pytest.mark.parametrize("setup", ["missing", "other-profile", "other-state"])
def test_check_pre_provisioned_failures(pre_sim, setup):
    if setup == "other-profile":
        pre_sim.add_device("pre-1", profile_key="other-key")
    elif setup == "other-state":
        pre_sim.add_device("pre-1", profile_key="pre-key", provision_state="waiting")
    c, (_, _, _, payload) = provision(pre_sim, pre_request(deviceName="pre-1"))
    assert payload == FAILURE
    c.close()


def test_check_pre_provisioned_wrong_secret_is_not_found(pre_sim):
    pre_sim.add_device("pre-1", profile_key="pre-key")
    c, (_, _, _, payload) = provision(pre_sim, json.dumps(
        {"provisionDeviceKey": "pre-key", "provisionDeviceSecret": "nope", "deviceName": "pre-1"}))
    assert payload == NOT_FOUND
    c.close()


def test_subscribe_in_provision_session_grants_only_the_response_topic(sim):
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(subscribe_packet(7, [("/provision/response", 1), ("v1/devices/me/attributes", 1), ("#", 0)]))
        assert c.read_packet() == (0x90, b"\x00\x07\x01\x80\x80")
        c.send(unsubscribe_packet(8, ["/provision/response"]))
        assert c.read_packet() == (0xB0, b"\x00\x08")


def test_provision_subscribe_refuse_still_delivers_reply_at_qos1(make_sim):
    sim = make_sim(provision_subscribe="refuse")
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(subscribe_packet(1, [("/provision/response", 0)]))
        assert c.read_packet() == (0x90, b"\x00\x01\x80")
        c.send(publish_packet(REQ, request(deviceName="m1"), qos=0))
        topic, qos, _, payload = parse_publish(*c.read_packet())
        assert topic == "/provision/response" and qos == 1 and b"SUCCESS" in payload


def test_provision_subscribe_ignore_sends_no_suback(make_sim):
    sim = make_sim(provision_subscribe="ignore")
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(subscribe_packet(1, [("/provision/response", 1)]))
        assert c.expect_silence(0.3)
        c.send(publish_packet(REQ, request(deviceName="m1"), qos=0))
        topic, qos, _, payload = parse_publish(*c.read_packet())
        assert qos == 1 and b"SUCCESS" in payload


def test_provisioning_is_not_rate_limited(make_sim):
    sim = make_sim(rate_limits="free")
    for i in range(60):
        c, (_, _, _, payload) = provision(sim, request(deviceName=f"m{i}"), qos=0)
        assert b"SUCCESS" in payload
        c.close()
