"""firmware.link against both umqtt.simple versions the meter meets (the ESP32 image's 1.8.0,
the Unix port's PyPI 1.3.4) over a fake network with MicroPython's socket semantics and a
broker that speaks bytes: TLS verified on both paths, one deadline per exchange whatever umqtt
sets, framing checked before anything is read or allocated, acks matched to packet ids, ids
that wrap, keepalive pings, bounded polls."""

import ast
import builtins
import glob
import os
import sys
import types

import pytest

import firmware.link as link_module
from fakes import (ROOT, FakeBroker, FakeHal, FakeUmqtt, BlockedForever, drop_ussl, packet,
                   publish_packet)
from firmware.link import Link, LinkError
from firmware.startup import tls_context

CA = b"\x30\x03der"
TIMEOUT_S = 10  # the link's exchange deadline (README: deadlines)


class Log:
    def __init__(self):
        self.lines = []

    def info(self, *a):
        self.lines.append(a)

    warn = error = info


@pytest.fixture(params=["1.8.0", "1.3.4"])
def version(request):
    return request.param


@pytest.fixture(autouse=True)
def _no_ussl():
    drop_ussl()
    yield
    drop_ussl()


def make(version, tls=False, **link_kw):
    broker = FakeBroker()
    broker.tokens["tok"] = "dev"
    hal = FakeHal(broker=broker)
    hal.wifi_joined = True
    um = FakeUmqtt(broker, version=version)
    feeds = []
    kw = dict(timeout_s=TIMEOUT_S, wdt_feed=lambda: feeds.append(hal.ticks_ms()))
    kw.update(link_kw)
    link = Link(um, hal.socket, hal.ticks_ms, hal.ticks_diff, Log(), **kw)
    ctx = tls_context(hal.ssl, CA) if tls else None
    return types.SimpleNamespace(link=link, um=um, hal=hal, broker=broker, ctx=ctx, feeds=feeds,
                                 log=link._log)


def connected(version, **kw):
    r = make(version, **kw)
    assert r.link.open("h", 1883, "dev", "tok", "", 60) == 0
    r.session = r.broker.sessions[-1]
    r.raw = r.session.sock
    return r


def elapsed_ms(r, t0_us):
    return (r.hal.clock.us - t0_us) / 1000


def swallow(kinds):
    # A server that reads these packet types and never answers them.
    def hook(session, first, body):
        return first & 0xF0 in kinds
    return hook


# --- TLS: verified on both umqtt paths ----------------------------------------------------------

def test_tls_uses_the_verified_context_and_the_host_name_on_both_versions(version):
    r = make(version, tls=True)
    assert r.link.open("tb.example", 8883, "dev", "tok", "", 60, r.ctx) == 0
    assert r.ctx.wrapped == ["tb.example"]
    assert r.broker.sessions[-1].sock.tls == ("tb.example", True)  # CERT_REQUIRED, host checked
    assert len(r.hal.ssl.contexts) == 1  # never micropython-lib's own, unverifying one


@pytest.mark.parametrize("cert, text", [
    ((b"\x30\x03xyz", ("tb.example",)), "not correctly signed by the trusted CA"),  # another CA
    ((CA, ("meters.example.org",)), "Common Name (CN) does not match"),  # another host name
])
def test_a_server_certificate_that_does_not_verify_is_refused_on_both_versions(version, cert, text):
    r = make(version, tls=True)
    r.broker.tls_cert = cert
    with pytest.raises(LinkError, match="TLS: .*" + text.replace("(", r"\(").replace(")", r"\)")):
        r.link.open("tb.example", 8883, "dev", "tok", "", 60, r.ctx)
    assert r.broker.connects == [] and not r.link.connected  # no CONNECT, no credentials sent


def test_the_stand_in_keeps_1_8_0s_unverified_legacy_path():
    # What Link must never do: with ssl=True, 1.8.0 calls micropython-lib's ssl.wrap_socket(),
    # which defaults to CERT_NONE and connects to a server with another CA's certificate.
    r = make("1.8.0", tls=True)
    r.broker.tls_cert = (b"\x30\x03xyz", ("tb.example",))
    net = r.link._net
    net.server = r.hal.socket.getaddrinfo("tb.example", 8883)
    net.start(10_000)
    r.um.socket = net  # as Link.open() does
    c = r.um.MQTTClient(b"dev", "tb.example", 8883, b"tok", b"", 60, ssl=True,
                        ssl_params={"server_hostname": "tb.example"})
    c.connect()  # the CONNECT, with the token, went to a server nobody verified
    assert r.broker.connects[-1][:3] == ("dev", "tok", 0)
    assert r.hal.ssl.contexts[-1].verify_mode == r.hal.ssl.CERT_NONE and net.tls == ("tb.example", False)


def test_both_versions_send_the_same_connect(version):
    wire = {}
    for v in ("1.8.0", "1.3.4"):
        for user in ("tok", "provision", ""):
            r = make(v)
            r.broker.basic[("cid-only", "", "")] = "dev"
            r.link.open("h", 1883, "cid-only" if not user else "dev", user, "", 60)
            wire[(v, user)] = bytes(r.hal.socket.created[-1].written)
    for user in ("tok", "provision", ""):
        assert wire[("1.8.0", user)] == wire[("1.3.4", user)], user
    assert b"cid-only" in wire[("1.8.0", "")] and wire[("1.8.0", "")][9] & 0xC0 == 0  # no user


# --- one deadline per exchange -------------------------------------------------------------------

def test_a_silent_server_cannot_hold_connect_past_the_deadline_whatever_umqtt_sets(version):
    r = make(version)
    r.broker.hook = swallow({0x10})  # accepts TCP, reads the CONNECT, never answers
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="timed out"):
        r.link.open("h", 1883, "dev", "tok", "", 60)  # BlockedForever if a read had no timeout
    assert TIMEOUT_S * 1000 <= elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50
    raw = r.hal.socket.created[-1]
    assert None not in raw.timeouts  # 1.8.0's settimeout(None) never reached the socket
    assert not r.link.connected and raw.closed


def test_a_dribbled_connack_is_bounded_by_the_whole_exchange_not_each_read(version):
    r = make(version)

    def dribble(session, first, body):
        if first == 0x10:
            for i, byte in enumerate(b"\x20\x02\x00\x00"):
                session.send(bytes([byte]), 0 if i == 0 else 4000)  # one byte every 4 s
            return True

    r.broker.hook = dribble
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="timed out"):
        r.link.open("h", 1883, "dev", "tok", "", 60)  # each read is quick; the 4 take 12 s
    assert elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50


def test_a_connack_split_across_reads_is_fine(version):
    r = make(version)

    def split(session, first, body):
        if first == 0x10:
            for i, part in enumerate((b"\x20", b"\x02", b"\x00\x00")):
                session.send(part, 300 * i)
            r.broker.sessions.append(session)
            return True

    r.broker.hook = split
    assert r.link.open("h", 1883, "dev", "tok", "", 60) == 0 and r.link.connected


def test_a_tls_server_that_stalls_the_handshake_is_bounded(version):
    r = make(version, tls=True)
    r.broker.tls_stall = True
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="timed out"):
        r.link.open("tb.example", 8883, "dev", "tok", "", 60, r.ctx)
    assert elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50


@pytest.mark.parametrize("junk", [
    b"\x30\x02\x00\x00",  # a PUBLISH header: what umqtt takes for CONNACK 0 once -O2 strips its assert
    b"\x20\x03\x00\x00\x00",  # wrong length
    b"\x20\x02\x00\x06",  # return code 6 does not exist in MQTT 3.1.1
    b"\x20\x02\x00\x86",  # nor an MQTT 5 reason code
    b"\x20\x02\x02\x00",  # reserved flag bits
    b"HTTP/1.1 400 Bad Request\r\n\r\n",  # garbage before any CONNACK (a proxy)
    b"\xff\xff\x20\x02\x00\x00",
])
def test_anything_but_a_connack_is_a_link_error_never_a_refusal_code(version, junk):
    r = make(version)
    r.broker.connack = lambda session, rc: [(0, junk)]
    with pytest.raises(LinkError, match="not a CONNACK"):
        r.link.open("h", 1883, "dev", "tok", "", 60)
    assert not r.link.connected


def test_connack_refusals_are_codes_and_network_failures_are_link_errors(version):
    r = make(version)
    assert r.link.open("h", 1883, "dev", "unknown", "", 60) == 5
    assert r.link.open("h", 1883, "dev", "", "", 60) == 2
    r.broker.connect_script = [3]
    assert r.link.open("h", 1883, "dev", "tok", "", 60) == 3
    r.broker.down = True
    with pytest.raises(LinkError, match="connection refused"):
        r.link.open("h", 1883, "dev", "tok", "", 60)
    r.hal.socket.dns_ok = False
    with pytest.raises(LinkError, match="name not resolved"):
        r.link.open("h", 1883, "dev", "tok", "", 60)
    assert not r.link.connected


def test_the_watchdog_is_fed_around_dns_and_as_each_exchange_starts(version):
    r = make(version)
    r.link.open("h", 1883, "dev", "tok", "", 60)
    assert len(r.feeds) == 2  # before DNS, after DNS (the CONNECT deadline starts then)
    r.link.subscribe(b"a/b", 1)
    r.link.publish(b"t", b"{}", 1)
    r.link.wait(100, lambda: True)
    assert len(r.feeds) == 5
    r.link.publish(b"t", b"{}", 0)  # nothing awaited
    r.link.poll()
    assert len(r.feeds) == 5


def test_subscribe_gives_up_when_pingresps_come_instead_of_the_suback(version):
    r = connected(version)

    def pings_instead(session, first, body):
        if first == 0x82:
            for i in range(20):
                session.send(b"\xd0\x00", 2000)  # a PINGRESP every 2 s, never the SUBACK
            return True

    r.broker.hook = pings_instead
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="subscribe to a/b: timed out"):
        r.link.subscribe(b"a/b", 1)
    assert elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50 and not r.link.connected


def test_publish_gives_up_when_a_flood_comes_instead_of_the_puback(version):
    r = connected(version)
    got = []
    r.link.on_message = lambda t, m: got.append(t)

    def flood(session, first, body):
        if first & 0xF0 == 0x30:
            for i in range(200):
                session.send(publish_packet(b"v1/devices/me/rpc/request/%d" % i, b"{}"), 100)
            return True

    r.broker.hook = flood
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="publish to t: timed out"):
        r.link.publish(b"t", b"{}", 1)
    assert elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50
    assert 50 < len(got) <= 101  # dispatched meanwhile, one every 100 ms until the deadline


def test_wait_returns_false_at_its_deadline_and_keeps_the_session(version):
    r = connected(version)
    for i in range(10):
        r.session.send(b"\xd0\x00", 1000)
    t0 = r.hal.clock.us
    assert r.link.wait(3000, lambda: False) is False
    assert 3000 <= elapsed_ms(r, t0) <= 3050 and r.link.connected


def test_a_packet_that_starts_must_end_within_the_deadline(version):
    r = connected(version)
    r.session.send(b"\x30\x0a\x00\x03abc")  # 5 of its 10 bytes, then silence
    t0 = r.hal.clock.us
    with pytest.raises(LinkError, match="receive: timed out"):
        r.link.poll()
    assert elapsed_ms(r, t0) <= TIMEOUT_S * 1000 + 50


def test_poll_never_waits_for_a_packet_to_start(version):
    r = connected(version)
    t0 = r.hal.clock.us
    for _ in range(100):
        r.link.poll()
    assert r.hal.clock.us == t0 and r.link.connected


def test_poll_handles_a_bounded_number_of_packets_per_call(version):
    r = connected(version)
    got = []
    r.link.on_message = lambda t, m: got.append(bytes(m))
    for i in range(20):
        r.session.send(publish_packet(b"v1/devices/me/attributes", b"%d" % i, 1, i + 1))
    r.link.poll()
    assert len(got) == 8
    r.link.poll()
    r.link.poll()
    assert got == [b"%d" % i for i in range(20)]
    assert r.session.pubacks == list(range(1, 21))  # every QoS 1 message acknowledged, in order


# --- framing, checked before anything is read or allocated ----------------------------------------

@pytest.mark.parametrize("junk, text", [
    (b"\x30\xff\xff\xff\xff\x7f", "length over 4 bytes"),
    (b"\x30\x80\x80\x10" + b"x" * 64, "of 262144 bytes refused"),  # body never read
    (b"\x30\x81\x18" + b"x" * 64, "of 3073 bytes refused (limit 3072)"),
    (b"\x30\x05\xff\xffabc", "topic of 65535 bytes in 5"),  # umqtt: read(-65532)
    (b"\x30\x05\x00\x09abc", "topic of 9 bytes in 5"),  # umqtt: read(-6)
    (b"\x30\x01\x00", "PUBLISH of 1 bytes"),
    (b"\x30\x04\x00\x00ab", "topic of 0 bytes"),
    (b"\x34\x07\x00\x01a\x00\x01hi", "PUBLISH at QoS 2 refused"),
    (b"\x36\x07\x00\x01a\x00\x01hi", "PUBLISH at QoS 3 refused"),
    (b"\x32\x07\x00\x01a\x00\x00hi", "packet id 0"),
    (b"\x20\x02\x00\x00", "unexpected packet 0x20"),  # a second CONNACK
    (b"\x50\x02\x00\x01", "unexpected packet 0x50"),  # PUBREC: never asked for
    (b"\x82\x06\x00\x01\x00\x01a\x01", "unexpected packet 0x82"),  # a SUBSCRIBE to the meter
    (b"\xb0\x02\x00\x01", "unexpected packet 0xb0"),  # UNSUBACK: never unsubscribed
    (b"\xe0\x00", "unexpected packet 0xe0"),  # MQTT 5 server DISCONNECT
    (b"\x00\x00", "unexpected packet 0x00"),
    (b"\xd0\x01\x00", "unexpected packet 0xd0 of 1 bytes"),  # a PINGRESP with a body
    (b"\x41\x02\x00\x01", "unexpected packet 0x41"),  # PUBACK with flags
    (b"\x40\x02\x00\x07", "ack 0x40 for packet 7, not awaited"),
    (b"\x90\x03\x00\x07\x01", "ack 0x90 for packet 7, not awaited"),
])
def test_malformed_or_unasked_packets_drop_the_session_with_one_clear_line(version, junk, text):
    r = connected(version)
    r.session.send(junk)
    with pytest.raises(LinkError) as e:
        r.link.poll()
    assert text in str(e.value), str(e.value)
    assert str(e.value).startswith("receive: ") and "\n" not in str(e.value)
    assert not r.link.connected and r.raw.closed


def test_an_oversized_packet_is_refused_before_its_body_is_read(version):
    r = connected(version)
    r.session.send(b"\x30\x80\x80\x10" + b"x" * 100)
    received = r.link.stats[1]
    with pytest.raises(LinkError, match="262144 bytes refused"):
        r.link.poll()
    assert r.link.stats[1] - received == 4 and r.raw.inbound == b"x" * 100


def test_a_suback_or_puback_for_another_packet_id_is_a_protocol_error(version):
    r = connected(version)
    r.broker.hook = lambda s, first, body: first == 0x82 and s.send(b"\x90\x03\x12\x34\x01") is None
    with pytest.raises(LinkError, match="ack 0x90 for packet 4660, not awaited"):
        r.link.subscribe(b"a/b", 1)
    r = connected(version)
    r.broker.hook = lambda s, first, body: first & 0xF0 == 0x30 and s.send(b"\x40\x02\xff\xff") is None
    with pytest.raises(LinkError, match="ack 0x40 for packet 65535, not awaited"):
        r.link.publish(b"t", b"{}", 1)
    r = connected(version)
    r.broker.hook = lambda s, first, body: first == 0x82 and \
        s.send(b"\x90\x03" + body[:2] + b"\x03") is None
    with pytest.raises(LinkError, match="SUBACK return code 0x03"):
        r.link.subscribe(b"a/b", 1)


def test_subscribe_grants_and_refusals(version):
    r = connected(version)
    assert r.link.subscribe(b"a/b", 1) is True and r.link.suback == 1
    r.broker.hook = lambda s, first, body: first == 0x82 and \
        s.send(b"\x90\x03" + body[:2] + b"\x80") is None
    assert r.link.subscribe(b"c/d", 1) is False and r.link.connected
    assert [t for _, t, _ in r.session.subscribes] == [b"a/b"]  # the second one the hook took


def test_subscribe_nowait_then_wait_handles_granted_refused_and_missing_subacks(version):
    for mode, rc in (("grant", 1), ("refuse", 0x80), ("ignore", None)):
        r = make(version)
        r.broker.provision_suback = mode
        r.link.open("h", 1883, "provision", "provision", "", 60)
        got = []
        r.link.on_message = lambda t, m: got.append((bytes(t), bytes(m)))
        r.link.subscribe_nowait(b"/provision/response", 1)
        r.broker.sessions[-1].send(publish_packet(b"/provision/response", b"{}", 1, 9), 500)
        assert r.link.wait(5000, lambda: bool(got))
        assert r.link.suback == rc, mode
        assert got == [(b"/provision/response", b"{}")]
        assert r.broker.sessions[-1].pubacks == [9]


def test_no_memory_for_a_message_drops_the_session_not_the_meter(version, monkeypatch):
    r = connected(version)
    real = bytearray

    def tight(n=0, *a):
        if isinstance(n, int) and n > 1000:
            raise MemoryError("memory allocation failed, allocating %d bytes" % n)
        return real(n, *a)

    monkeypatch.setattr(link_module, "bytearray", tight, raising=False)
    r.session.send(publish_packet(b"v1/devices/me/attributes", b"x" * 2000, 1, 3))
    with pytest.raises(LinkError, match="receive: not enough memory"):
        r.link.poll()
    assert not r.link.connected and r.raw.closed


# --- packet ids --------------------------------------------------------------------------------

def test_packet_ids_wrap_from_65535_to_1_and_acks_still_match(version):
    r = connected(version)
    r.link.pid = 65533
    for _ in range(4):
        r.link.publish(b"t", b"{}", 1)
    r.link.subscribe(b"a/b", 1)
    assert r.session.publish_ids == [65534, 65535, 1, 2]
    assert r.session.subscribes[-1][0] == 3 and r.link.connected


def test_65545_qos1_publishes_on_one_session_all_get_their_puback(version):
    # umqtt.simple's own ids pass 65535 (struct packs 65536 as 0 on MicroPython) and its
    # PUBACK loop then never matches: the session hangs. The link's ids wrap to 1.
    r = connected(version)
    for _ in range(65545):
        r.link.publish(b"t", b"1", 1)
    ids = r.session.publish_ids
    assert len(ids) == 65545 and 0 not in ids and max(ids) == 65535 and ids[-1] == 10
    assert r.link.connected


def test_a_new_session_starts_its_packet_ids_again(version):
    r = connected(version)
    r.link.pid = 40000
    r.link.publish(b"t", b"{}", 1)
    r.link.close()
    assert r.link.open("h", 1883, "dev", "tok", "", 60) == 0
    r.link.publish(b"t", b"{}", 1)
    assert r.broker.sessions[-1].publish_ids == [1]


# --- keepalive -------------------------------------------------------------------------------

def test_ping_and_its_pingresp(version):
    r = connected(version)
    r.link.ping()
    t0 = r.link.pinged
    assert t0 is not None and r.session.pings == 1
    r.broker.pingresp = False
    r.link.ping()  # a second one before the answer keeps the first one's time
    assert r.link.pinged == t0 and r.session.pings == 2
    r.link.poll()
    assert r.link.pinged is None  # the first PINGRESP answers it


def test_no_pingresp_within_the_deadline_drops_the_session(version):
    r = connected(version)
    r.broker.pingresp = False
    r.link.ping()
    r.hal.clock.advance_ms(TIMEOUT_S * 1000 - 10)
    r.link.poll()
    assert r.link.connected
    r.hal.clock.advance_ms(20)
    with pytest.raises(LinkError, match="no PINGRESP within 10 s"):
        r.link.poll()
    assert not r.link.connected


def test_a_pingresp_flood_is_harmless_and_bounded_per_poll(version):
    r = connected(version)
    r.session.send(b"\xd0\x00" * 100)
    r.link.poll()
    assert len(r.raw.inbound) == 2 * (100 - 8) and r.link.connected


def test_quiet_ms_counts_from_the_last_thing_sent(version):
    r = connected(version)
    r.hal.clock.advance_ms(1234)
    assert r.link.quiet_ms() == 1234
    r.link.publish(b"t", b"{}", 0)
    assert r.link.quiet_ms() == 0


# --- the wire -----------------------------------------------------------------------------------

def test_one_write_per_packet_and_byte_counters(version):
    r = connected(version)
    assert len(r.raw.writes) == 1  # the CONNECT, in one piece
    sent = r.link.stats[0]
    r.link.publish(b"v1/devices/me/telemetry", b'{"pulses":12345}', 1)
    assert r.raw.writes[-1] == b"\x32\x2b\x00\x17v1/devices/me/telemetry\x00\x01{\"pulses\":12345}"
    assert r.link.stats[0] - sent == 45
    big = b"[" + b"x" * 600 + b"]"
    r.link.publish(b"t", big, 0)
    assert r.raw.writes[-2:] == [b"\x30\xdd\x04\x00\x01t", big]  # header (605 bytes follow), the batch
    r.link.close()
    assert r.raw.writes[-1] == b"\xe0\x00" and r.session.disconnected


def test_publish_without_puback_is_a_link_error_and_closes(version):
    r = connected(version)
    r.broker.puback["t"] = "drop"
    with pytest.raises(LinkError, match="publish to t: timed out"):
        r.link.publish(b"t", b"{}", 1)
    assert not r.link.connected


def test_a_server_that_closes_is_reported_as_closed(version):
    r = connected(version)
    r.session.close()
    with pytest.raises(LinkError, match="connection closed by the server"):
        r.link.poll()
    with pytest.raises(LinkError, match="not connected"):
        r.link.publish(b"t", b"{}", 1)


# --- the device build -----------------------------------------------------------------------------

def test_the_firmware_relies_on_no_assert_since_the_device_build_strips_them():
    # tools/build_device.py compiles with mpy-cross -O2, which removes every assert: the
    # firmware must check what it relies on itself (as firmware/link.py checks the CONNACK that
    # umqtt.simple checks with an assert).
    src = open(os.path.join(ROOT, "tools", "build_device.py")).read()
    assert '"-O2"' in src
    for path in glob.glob(os.path.join(ROOT, "firmware", "**", "*.py"), recursive=True) + \
            [os.path.join(ROOT, "main.py")]:
        tree = ast.parse(open(path).read(), path)
        asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert not asserts, "%s:%s" % (path, asserts)


def test_blocking_forever_is_never_swallowed():
    # The fake network's way of saying "the board would hang here" must reach the test even
    # through the firmware's `except Exception`.
    assert not issubclass(BlockedForever, Exception)


def test_with_no_umqtt_given_it_is_imported_for_each_connect_only(version, monkeypatch):
    # main.py passes None: umqtt.simple's code is on the heap only while a session opens.
    r = make(version)
    loads = []
    real_import = builtins.__import__

    def board_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "umqtt":
            loads.append(name)
            pkg = types.ModuleType("umqtt")
            pkg.simple = FakeUmqtt(r.broker, version=version)
            sys.modules["umqtt"], sys.modules["umqtt.simple"] = pkg, pkg.simple
            return pkg
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr("builtins.__import__", board_import)
    link = Link(None, r.hal.socket, r.hal.ticks_ms, r.hal.ticks_diff, Log(), timeout_s=TIMEOUT_S)
    assert link.open("h", 1883, "dev", "tok", "", 60) == 0
    assert "umqtt.simple" not in sys.modules and "umqtt" not in sys.modules
    link.close()
    assert link.open("h", 1883, "dev", "unknown", "", 60) == 5  # imported again, refusals too
    assert loads == ["umqtt", "umqtt"] and "umqtt.simple" not in sys.modules
