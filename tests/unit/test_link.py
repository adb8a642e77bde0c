"""firmware.link: timeouts that survive umqtt's setblocking(True), both TLS APIs, SUBACKs."""

import sys

import pytest

from fakes import FakeBroker, FakeHal, FakeUmqtt, drop_ussl
from firmware.link import Link, LinkError
from firmware.startup import tls_context


class Log:
    def __init__(self):
        self.lines = []

    def info(self, *a):
        self.lines.append(a)

    warn = error = info


def make(new_api=True, tls=False):
    broker = FakeBroker()
    broker.tokens["tok"] = "dev"
    hal = FakeHal(broker=broker)
    hal.wifi_joined = True
    um = FakeUmqtt(broker, new_api=new_api)
    link = Link(um, hal.socket, hal.ticks_ms, hal.ticks_diff, Log(), timeout_s=7)
    ctx = tls_context(hal.ssl, b"\x30\x03der") if tls else None
    return link, um, hal, broker, ctx


def test_umqtt_gets_a_socket_with_a_timeout_before_it_connects():
    link, um, hal, broker, _ = make()
    assert um.socket is not None  # umqtt.simple's module-level socket replaced
    assert link.open("h", 1883, "dev", "tok", "", 60) == 0
    raw = hal.socket.created[-1]
    assert raw.timeout == 7


def test_setblocking_true_restores_the_timeout_instead_of_blocking_forever():
    link, um, hal, broker, _ = make()
    link.open("h", 1883, "dev", "tok", "", 60)
    raw = hal.socket.created[-1]
    link.poll()  # check_msg: setblocking(False), then wait_msg: setblocking(True)
    assert raw.blocking and raw.timeout == 7
    link._c.sock.setblocking(True)
    assert raw.timeout == 7


def test_connack_refusals_are_codes_and_network_failures_are_link_errors():
    link, um, hal, broker, _ = make()
    assert link.open("h", 1883, "dev", "unknown", "", 60) == 5
    assert link.open("h", 1883, "dev", "", "", 60) == 2
    broker.connect_script = [3]
    assert link.open("h", 1883, "dev", "tok", "", 60) == 3
    broker.down = True
    with pytest.raises(LinkError):
        link.open("h", 1883, "dev", "tok", "", 60)
    assert not link.connected


@pytest.mark.parametrize("new_api", [True, False])
def test_tls_context_reaches_both_umqtt_apis(new_api):
    drop_ussl()
    link, um, hal, broker, ctx = make(new_api=new_api, tls=True)
    assert link.open("tb.example", 8883, "dev", "tok", "", 60, ctx) == 0
    assert ctx.wrapped == ["tb.example"]
    assert ("ussl" in sys.modules) == (not new_api)  # the stand-in only for the old API
    drop_ussl()


def test_publish_without_puback_is_a_link_error_and_closes():
    link, um, hal, broker, _ = make()
    link.open("h", 1883, "dev", "tok", "", 60)
    broker.puback["t"] = "drop"
    with pytest.raises(LinkError):
        link.publish(b"t", b"{}", 1)
    assert not link.connected


def test_subscribe_nowait_then_wait_consumes_granted_and_refused_subacks():
    for mode, rc in (("grant", 1), ("refuse", 0x80)):
        link, um, hal, broker, _ = make()
        broker.provision_suback = mode
        link.open("h", 1883, "provision", "provision", "", 60)
        link.subscribe_nowait(b"/provision/response", 1)
        got = []
        link.on_message = lambda t, m: got.append((t, m))
        um_client = link._c
        um_client.pending.append((b"/provision/response", b"{}"))
        assert link.wait(5000, lambda: bool(got))
        assert link.suback == rc
        assert got == [(b"/provision/response", b"{}")]


def test_wait_gives_up_at_its_deadline():
    link, um, hal, broker, _ = make()
    link.open("h", 1883, "dev", "tok", "", 60)
    with pytest.raises(LinkError):
        link.wait(3000, lambda: False)  # the fake socket times out like a silent server
    assert not link.connected


def test_byte_counters():
    link, um, hal, broker, _ = make()
    link.open("h", 1883, "dev", "tok", "", 60)
    before = link.stats[0]
    link.publish(b"t", b"{}", 0)
    assert link.stats[0] > before


class _Recorder:
    """A socket that records each write() call as the network would see it (one segment)."""

    def __init__(self):
        self.writes = []
        self.blocking = True
        self.inbound = b"\x40\x02\x00\x01"

    def write(self, buf, n=None):
        self.writes.append(bytes(buf[:n] if n is not None else buf))
        return len(self.writes[-1])

    def read(self, n):
        data, self.inbound = self.inbound[:n], self.inbound[n:]
        return data

    def setblocking(self, flag):
        self.blocking = flag

    def settimeout(self, t):
        self.blocking = True

    def close(self):
        pass


def test_the_pieces_of_one_packet_leave_as_one_write():
    from firmware.link import _Guarded
    raw = _Recorder()
    stats = [0, 0]
    g = _Guarded(raw, raw, 5, stats, bytearray(256))
    # umqtt.simple's QoS 1 PUBLISH: header (written with a length), topic length, topic,
    # packet id, payload; then it reads the PUBACK.
    g.write(bytearray(b"\x32\x2b\0\0"), 2)
    g.write(b"\x00\x17")
    g.write(b"v1/devices/me/telemetry")
    g.write(bytearray(b"\x00\x01\0\0"), 2)
    g.write(b'{"pulses":12345}')
    assert raw.writes == []  # nothing sent yet
    assert g.read(1) == b"\x40"  # reading flushes first
    assert raw.writes == [b"\x32\x2b\x00\x17v1/devices/me/telemetry\x00\x01{\"pulses\":12345}"]
    assert stats[0] == 45 and stats[1] == 1


def test_a_large_payload_follows_the_pending_pieces_and_nonblocking_flushes_first():
    from firmware.link import _Guarded
    raw = _Recorder()
    g = _Guarded(raw, raw, 5, [0, 0], bytearray(64))
    g.write(b"\x32\xff\x01")
    big = b"[" + b"x" * 300 + b"]"
    g.write(big)
    assert raw.writes == [b"\x32\xff\x01", big]
    g.write(b"\x40\x02\x00\x07")  # a PUBACK for the server, then umqtt polls (non-blocking)
    g.setblocking(False)
    assert raw.writes[-1] == b"\x40\x02\x00\x07" and raw.blocking is False
    g.write(b"\xe0\x00")
    g.close()
    assert raw.writes[-1] == b"\xe0\x00"
