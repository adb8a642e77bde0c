"""Hostile input: garbage, lying lengths, half-open connections, a thousand clients, bounded memory."""
import gc
import os
import resource
import socket
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from rawmqtt import PINGREQ, RawClient, connect_packet, varint

from tbsim import TBSim, store


def alive(sim):
    with RawClient(sim.mqtt_port) as c:
        return c.connect("provision") == (0x20, b"\x00\x00")


@pytest.mark.parametrize("junk", [
    b"\x00\x00",                                    # reserved packet type 0
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x10\xff\xff\xff\xff\x7f",                    # remaining length needs a fifth byte
    b"\x10\x05\x00\x04MQ",                          # truncated CONNECT then silence is handled by timeout
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS ClientHello on the plain port
    b"\x82\x05\x00\x01\x00\x01a",                   # SUBSCRIBE before CONNECT, ok framing (queued)
    b"\x30\x02\x00\x00" * 3,
])
def test_garbage_never_crashes_the_server(make_sim, junk):
    sim = make_sim(connect_timeout_s=0.3)
    with RawClient(sim.mqtt_port) as c:
        c.send(junk)
        c.expect_closed(timeout=3)
    assert alive(sim)


def test_malformed_packets_after_connect_close(sim):
    sim.add_device("m", token="t")
    for junk in (b"\x32\x03\x00\x05a",              # topic length beyond the packet
                 b"\x36\x05\x00\x01a\x00\x01",      # QoS 3
                 b"\x80\x03\x00\x01\x00",           # SUBSCRIBE with wrong flags
                 b"\x00\x00"):
        with RawClient(sim.mqtt_port) as c:
            assert c.connect("cid", "t") == (0x20, b"\x00\x00")
            c.send(junk)
            assert c.expect_closed()
    assert all(e["reason"] == "protocol-error" for e in sim.events("close"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzzed_first_bytes(sim_for_fuzz, data):
    try:
        with RawClient(sim_for_fuzz.mqtt_port) as c:
            c.send(data)
            try:
                c.read_packet(timeout=0.03)
            except Exception:
                pass
    except OSError:
        pass
    assert alive(sim_for_fuzz)


@pytest.fixture(scope="module")
def sim_for_fuzz():
    sim = TBSim(connect_timeout_s=0.5).start()
    yield sim
    sim.stop()


def test_half_open_connections_are_closed(make_sim):
    sim = make_sim(connect_timeout_s=0.4)
    socks = [socket.create_connection(("127.0.0.1", sim.mqtt_port)) for _ in range(50)]
    for i, sock in enumerate(socks):
        if i % 2:
            sock.sendall(connect_packet("c%d" % i)[:7])     # a CONNECT that never completes
    assert sim.wait_for(lambda: len(sim.events("close")) >= 50, timeout_s=5)
    assert all(e["reason"] == "connect-timeout" for e in sim.events("close"))
    for sock in socks:
        sock.close()
    assert alive(sim)


def test_a_thousand_connections_at_once(make_sim):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    sim = make_sim()
    n = 1000
    for i in range(n):
        sim.add_device(f"d{i}", token=f"token-{i}")
    socks = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", sim.mqtt_port), timeout=10)
        sock.sendall(connect_packet(f"c{i}", f"token-{i}"))
        socks.append(sock)
    for sock in socks:
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            assert chunk, "closed"
            data += chunk
        assert data == b"\x20\x02\x00\x00"
    assert sum(1 for d in sim.devices() if d["connected"]) == n
    for sock in socks[:10]:
        sock.sendall(PINGREQ)
        assert sock.recv(2) == b"\xd0\x00"
    for sock in socks:
        sock.close()
    assert sim.wait_for(lambda: not any(d["connected"] for d in sim.devices()), timeout_s=10)


def test_event_log_is_a_bounded_ring(monkeypatch, make_sim):
    monkeypatch.setattr(store, "EVENTS_MAX", 50)
    sim = make_sim()
    for _ in range(40):
        assert alive(sim)                    # each: connect + close events
    assert sim.wait_for(lambda: sim.store.events()[1] == 80, timeout_s=3)
    assert len(sim.events()) == 50
    events, nxt = sim.store.events(since=0)
    assert nxt == 80 and len(events) == 50
    later, nxt2 = sim.store.events(since=75)
    assert len(later) == 5 and nxt2 == 80


def test_memory_does_not_grow_under_abuse(make_sim):
    sim = make_sim(connect_timeout_s=0.3)
    sim.add_device("m", token="t")

    def abuse(rounds):
        for i in range(rounds):
            with RawClient(sim.mqtt_port) as c:
                c.send(bytes([0x32]) + varint(65536) + b"\x00")      # lying length, then hang up
            with RawClient(sim.mqtt_port) as c:
                c.send(os.urandom(64))

    abuse(30)                                 # warm-up: caches, lazily built objects
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        abuse(200)
        sim.wait_for(lambda: not sim._connections, timeout_s=5)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 400 abusive connections must cost no more than their (bounded) event records.
    assert after - before < 2_000_000, after - before
    assert alive(sim)


def test_deeply_nested_json_is_just_invalid(sim):
    sim.add_device("m", token="t")
    with RawClient(sim.mqtt_port) as c:
        assert c.connect("cid", "t") == (0x20, b"\x00\x00")
        from rawmqtt import publish_packet
        c.send(publish_packet("v1/devices/me/telemetry", "[" * 30000 + "]" * 30000, qos=1))
        assert c.expect_closed()
    assert sim.events("close")[-1]["reason"] == "validation"
    assert alive(sim)
