"""CONNECT / CONNACK and session rules (docs/thingsboard.md §1, §9)."""
import socket
import time

import pytest
from rawmqtt import (PINGREQ, Closed, RawClient, connect_packet, publish_packet, puback_packet,
                     subscribe_packet)

CONNACK_OK = (0x20, b"\x00\x00")


def test_valid_token_gets_connack_0_and_password_is_ignored(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("anything", "tok-1", "whatever-password") == CONNACK_OK
        c.send(PINGREQ)
        assert c.read_packet() == (0xD0, b"")
    ev = sim.events("connect")[-1]
    assert ev["device"] == "meter-1" and ev["returnCode"] == 0 and ev["session"] == "device"


def test_unknown_token_gets_connack_5_then_close(sim):
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "no-such-token") == (0x20, b"\x00\x05")
        assert c.expect_closed()


def test_no_username_no_password_with_client_id_gets_connack_2(sim):
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("some-client") == (0x20, b"\x00\x02")
        assert c.expect_closed()


@pytest.mark.parametrize("client_id,username,password,code", [
    ("", None, None, 5),            # nothing at all: NOT_AUTHORIZED -> 5
    ("cid", "bad", None, 5),        # username only: BAD_USERNAME_OR_PASSWORD -> 5
    ("cid", "bad", "pw", 5),        # all three present
    ("", "bad", "pw", 5),
])
def test_other_refusals_are_5_never_4(sim, client_id, username, password, code):
    with RawClient(sim.mqtt_port) as c:
        assert c.connect(client_id, username, password) == (0x20, bytes([0, code]))
        assert c.expect_closed()


def test_mqtt5_refusal_reason_codes_and_disconnect(sim):
    with RawClient(sim.mqtt_port) as c:
        # v5 CONNACK carries an (empty) property length; TB then also sends DISCONNECT with the reason.
        assert c.connect("cid", level=5) == (0x20, b"\x00\x85\x00")
        assert c.read_packet() == (0xE0, b"\x85\x00")
        assert c.expect_closed()
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "bad", "pw", level=5) == (0x20, b"\x00\x86\x00")


def test_session_present_echoes_not_clean_session(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "tok-1", clean=False) == (0x20, b"\x01\x00")


@pytest.mark.parametrize("how", ["client_id", "username"])
def test_provision_by_client_id_or_username_wins_over_a_valid_token(sim, how):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        if how == "client_id":
            assert c.connect("provision", "tok-1") == CONNACK_OK
        else:
            assert c.connect("cid", "provision", "tok-1") == CONNACK_OK
        # A provision-only session: telemetry is not accepted (PUBACK, then close).
        c.send(publish_packet("v1/devices/me/telemetry", '{"a":1}', qos=1, packet_id=3))
        assert c.read_packet() == (0x40, b"\x00\x03")
        assert c.expect_closed()
    assert sim.events("connect")[-1]["session"] == "provision"
    assert sim.telemetry("meter-1") == []


def test_second_session_with_same_token_is_accepted_and_older_closed(sim):
    sim.add_device("meter-1", token="tok-1")
    old = RawClient(sim.mqtt_port)
    assert old.connect("board-a", "tok-1") == CONNACK_OK
    new = RawClient(sim.mqtt_port)
    assert new.connect("board-b", "tok-1") == CONNACK_OK
    assert old.expect_closed()
    new.send(PINGREQ)
    assert new.read_packet() == (0xD0, b"")
    closes = [e for e in sim.events("close") if e["device"] == "meter-1"]
    assert closes[-1]["reason"] == "taken-over" and closes[-1]["clientId"] == "board-a"
    new.close()


def test_same_client_id_different_tokens_coexist(sim):
    sim.add_device("a", token="tok-a")
    sim.add_device("b", token="tok-b")
    with RawClient(sim.mqtt_port) as a, RawClient(sim.mqtt_port) as b:
        assert a.connect("same", "tok-a") == CONNACK_OK
        assert b.connect("same", "tok-b") == CONNACK_OK
        for c in (a, b):
            c.send(PINGREQ)
            assert c.read_packet() == (0xD0, b"")


def test_mqtt_basic_credentials(sim):
    sim.add_device("basic", credentials_type="MQTT_BASIC",
                   basic={"clientId": "cid-1", "userName": "user-1", "password": "pw-1"})
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid-1", "user-1", "pw-1") == CONNACK_OK
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid-1", "user-1", "wrong") == (0x20, b"\x00\x05")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("other-cid", "user-1", "pw-1") == (0x20, b"\x00\x05")


def test_mqtt_basic_client_id_only(sim):
    sim.add_device("cid-only", credentials_type="MQTT_BASIC", basic={"clientId": "just-me"})
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("just-me") == CONNACK_OK


def test_mqtt31_protocol_is_served(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("old-client", "tok-1", level=3, name="MQIsdp") == CONNACK_OK


@pytest.mark.parametrize("name,level", [("MQTT", 6), ("MQTT", 3), ("MQIsdp", 4), ("XYZ", 4)])
def test_unacceptable_protocol_is_closed_without_connack(sim, name, level):
    # Netty's decoder fails on these, and TB closes (no CONNACK 1).
    with RawClient(sim.mqtt_port) as c:
        c.send(connect_packet("cid", level=level, name=name))
        assert c.expect_closed()


def test_incomplete_connect_is_closed_after_connect_timeout(make_sim):
    sim = make_sim(connect_timeout_s=0.4)
    with RawClient(sim.mqtt_port) as c:
        c.send(connect_packet("cid")[:5])
        t0 = time.monotonic()
        assert c.expect_closed(timeout=3)
        assert 0.3 < time.monotonic() - t0 < 2.0
    assert sim.events("close")[-1]["reason"] == "connect-timeout"


def test_packets_before_connect_are_held_not_answered(sim):
    with RawClient(sim.mqtt_port) as c:
        c.send(PINGREQ)
        assert c.expect_silence(0.3)


def test_a_hundred_packets_before_connect_close_the_connection(sim):
    with RawClient(sim.mqtt_port) as c:
        c.send(PINGREQ * 100)
        assert c.expect_closed()


def test_second_connect_on_a_session_closes_it(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "tok-1") == CONNACK_OK
        c.send(connect_packet("cid", "tok-1"))
        assert c.expect_closed()


def test_packets_pipelined_behind_connect_are_processed_after_it(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        c.send(connect_packet("cid", "tok-1") + publish_packet("v1/devices/me/telemetry", '{"x":1}', qos=1, packet_id=9))
        assert c.read_packet() == CONNACK_OK
        assert c.read_packet() == (0x40, b"\x00\x09")
    assert sim.telemetry("meter-1")[0]["values"] == {"x": 1}


def test_device_puback_for_unknown_packet_id_is_harmless(sim):
    sim.add_device("meter-1", token="tok-1")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "tok-1") == CONNACK_OK
        c.send(puback_packet(1234) + subscribe_packet(1, [("v1/devices/me/attributes", 1)]))
        assert c.read_packet() == (0x90, b"\x00\x01\x01")
