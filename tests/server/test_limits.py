"""Rate limits, the 65536-byte packet limit, inactivity and keepalive (docs/thingsboard.md §7, §9)."""
import json
import struct
import time

import pytest
from rawmqtt import PINGREQ, RawClient, publish_packet, s, varint

TELEMETRY = "v1/devices/me/telemetry"


def connected(sim, token="tok-1", name="meter-1", **kw):
    if sim.device(name) is None:
        sim.add_device(name, token=token)
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", token, **kw)[1][1] == 0
    return c


def count_pubacks_until_close(c):
    acks = 0
    while True:
        try:
            first, _ = c.read_packet(timeout=3)
        except Exception:
            return acks
        assert first == 0x40
        acks += 1


def test_rate_limits_are_off_by_default(sim):
    c = connected(sim)
    c.send(b"".join(publish_packet(TELEMETRY, '{"v":%d}' % i, qos=1, packet_id=i + 1) for i in range(200)))
    for i in range(200):
        assert c.read_packet()[0] == 0x40
    assert sim.device("meter-1")["telemetryCount"] == 200
    c.close()


def test_free_plan_telemetry_messages_per_second_close_the_connection(make_sim):
    sim = make_sim(rate_limits="free")
    c = connected(sim)
    c.send(b"".join(publish_packet(TELEMETRY, '{"v":%d}' % i, qos=1, packet_id=i + 1) for i in range(80)))
    acks = count_pubacks_until_close(c)
    # 50 per second, refilled continuously: a burst gets 50, plus one per 20 ms the server spent on it.
    assert 50 <= acks <= 56
    assert sim.events("close")[-1]["reason"] == "rate-limit"
    assert sim.device("meter-1")["telemetryCount"] == acks


def test_paid_plan_allows_a_bigger_burst(make_sim):
    sim = make_sim(rate_limits="paid")
    c = connected(sim)
    c.send(b"".join(publish_packet(TELEMETRY, '{"v":%d}' % i, qos=1, packet_id=i + 1) for i in range(130)))
    assert 100 <= count_pubacks_until_close(c) <= 110


def test_data_points_limit(make_sim):
    sim = make_sim(rate_limits="free")
    c = connected(sim)
    big = json.dumps({f"k{i}": i for i in range(101)})       # 101 data points > 100 per second
    c.send(publish_packet(TELEMETRY, big, qos=1, packet_id=1))
    assert c.expect_closed()
    assert sim.device("meter-1")["telemetryCount"] == 0


def test_connect_counts_as_a_message_and_gets_connack_3(make_sim):
    sim = make_sim(rate_limits="free")
    sim.add_device("meter-1", token="tok-1")
    codes = []
    clients = []
    for _ in range(40):
        c = RawClient(sim.mqtt_port)
        clients.append(c)
        codes.append(c.connect("cid", "tok-1")[1][1])
        if codes[-1]:
            break
    # Each accepted CONNECT takes one token and each session it takes over another (the close event).
    assert codes[-1] == 3 and set(codes[:-1]) == {0}
    assert 20 <= len(codes) <= 40
    for c in clients:
        c.close()


def test_getsessionlimits_is_not_rate_limited(make_sim):
    sim = make_sim(rate_limits="free")
    c = connected(sim)
    c.send(b"".join(publish_packet("v1/devices/me/rpc/request/%d" % i, '{"method":"getSessionLimits"}', qos=0)
                    for i in range(70)))
    for _ in range(70):
        assert c.read_packet()[0] == 0x32          # QoS 1: no subscription to the response topic
    c.close()


def telemetry_packet_with_remaining_length(n):
    topic = s(TELEMETRY)
    filler = n - len(topic) - 2 - len('{"a":""}')
    payload = b'{"a":"' + b"x" * filler + b'"}'
    body = topic + struct.pack("!H", 1) + payload
    assert len(body) == n
    return bytes([0x32]) + varint(n) + body


def test_packet_of_exactly_65536_bytes_is_accepted(sim):
    c = connected(sim)
    c.send(telemetry_packet_with_remaining_length(65536))
    assert c.read_packet() == (0x40, b"\x00\x01")
    c.close()


def test_packet_over_65536_bytes_closes(sim):
    c = connected(sim)
    c.send(telemetry_packet_with_remaining_length(65537))
    assert c.expect_closed()
    assert sim.events("close")[-1]["reason"] == "packet-too-large"


def test_lying_remaining_length_closes_without_waiting_for_the_body(sim):
    c = connected(sim)
    t0 = time.monotonic()
    c.send(bytes([0x32]) + varint(268_435_455) + b"\x00\x05hello")   # claims 256 MiB, sends 7 bytes
    assert c.expect_closed(timeout=2)
    assert time.monotonic() - t0 < 1


def test_inactivity_closes_and_pings_count_as_activity(make_sim):
    sim = make_sim(inactivity_timeout_s=0.6)
    quiet = connected(sim)
    busy = connected(sim, token="tok-2", name="meter-2")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        busy.send(PINGREQ)
        assert busy.read_packet() == (0xD0, b"")
        time.sleep(0.15)
    assert quiet.expect_closed(timeout=0.1)
    assert [e["device"] for e in sim.events("close") if e["reason"] == "inactivity"] == ["meter-1"]
    busy.close()


def test_client_keepalive_is_not_enforced(make_sim):
    sim = make_sim(inactivity_timeout_s=30)
    c = connected(sim, keepalive=1)
    time.sleep(2.0)                       # well past 1.5 x keepalive
    c.send(PINGREQ)
    assert c.read_packet() == (0xD0, b"")
    c.close()
