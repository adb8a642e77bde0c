"""Fakes for the CPython unit tests: the hardware edge (FakeHal), a network that behaves like
MicroPython's sockets, select.poll and micropython-lib's ssl, and a ThingsBoard-like broker
that speaks MQTT bytes.

umqtt.simple is not faked: FakeUmqtt(broker, new_api) loads the real PyPI 1.3.4 the firmware
runs on the Unix port (lib/umqtt/simple.py, fetched by `make lib`), or the stand-in for
micropython-lib's 1.8.0 that the ESP32 image freezes (tests/e2e/umqtt180, written from its
source: constructor, connect() with settimeout(timeout=None), the legacy ssl=True path through
micropython-lib's unverifying ssl.wrap_socket()). Both run over the fake network, so every link
test runs the code paths a board runs, with either version.

FakeBroker scripts what a ThingsBoard server answers (CONNACK codes, every provisioning reply,
refused or ignored SUBSCRIBEs, missing PUBACKs, dropped connections) and records everything the
meter sent. Time is FakeClock's: a socket wait or a poll() that nothing answers moves it on by
its timeout, so deadlines are exercised exactly. A read that would block forever raises
BlockedForever, which no `except Exception` in the firmware can swallow.
"""

import builtins
import errno
import json
import os
import struct
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLLIN, POLLOUT, POLLERR, POLLHUP = 1, 4, 8, 16  # MicroPython's select constants


class BlockedForever(BaseException):
    """A socket operation that would never return on the board (the watchdog would reset)."""


class FakeClock:
    # The ESP32's ticks: a 2**30 period for both ticks_ms and ticks_us. They start 30 s before
    # both wrap (ticks_us wraps again every 17.9 min, ticks_ms every 12.4 days), so every test
    # that runs half a minute crosses a wrap, as a board does after 12.4 days.
    START_US = ((1 << 30) - 30_000) * 1000

    def __init__(self):
        self.us = self.START_US

    def ticks_us(self):
        return self.us % (1 << 30)

    def ticks_ms(self):
        return (self.us // 1000) % (1 << 30)

    @staticmethod
    def ticks_diff(a, b):
        # MicroPython semantics for a 2**30 period
        d = (a - b) & ((1 << 30) - 1)
        return d - (1 << 30) if d >= (1 << 29) else d

    @staticmethod
    def ticks_add(a, b):
        return (a + b) % (1 << 30)

    def advance_ms(self, ms):
        self.us += int(ms * 1000)


class FakeHal:
    name = "fake"

    def __init__(self, clock=None, broker=None):
        self.clock = clock or FakeClock()
        self.ticks_ms = self.clock.ticks_ms
        self.ticks_us = self.clock.ticks_us
        self.ticks_diff = self.clock.ticks_diff
        self.ticks_add = self.clock.ticks_add
        self.broker = broker
        self.socket = FakeSocketModule(self)
        self.ssl = FakeSslModule(self)
        if broker is not None:
            broker.clock = self.clock
            broker.hal = self
        self.wifi_up = True  # the access point is reachable
        self.wifi_joined = False
        self.wifi_joins = 0
        self.time_ok = True  # NTP answers (with the true time, unless ntp_script says else)
        self.ntp_script = []  # the next NTP answers: Unix ms, or None (no answer)
        self.ntp_queries = 0
        self.epoch0_ms = 1_795_000_000_000  # the true Unix ms at clock.us == 0
        # The RTC: set to (Unix ms, clock.us at that moment); it runs drift_ppm fast. It reads
        # the true time at power-up unless a test sets it (hal.epoch_ms(946684800000): 2000-01-01,
        # as an ESP32 after power-up).
        self.drift_ppm = 0
        self._rtc = (self.true_ms(), self.clock.us)
        self.button = False
        self.wdt_feeds = 0
        self.resets = 0
        self.cause = 0  # reset_cause() of this boot: 0 power-up, 1 reset, 2 watchdog
        self.idf = None  # idf_heap(): (free, largest) as on an ESP32, or None
        self.wifi_error = None  # an exception wifi_connect() raises (ESP32: "Wifi Internal Error")
        self.led = []
        self.slept_ms = 0

    def sleep_ms(self, ms):
        self.slept_ms += ms
        self.clock.advance_ms(ms)

    def unique_id(self):
        return b"\xa1\xb2\xc3\xd4\xe5\xf6"

    def mount(self):
        pass

    def mem_free(self):
        return 50000

    def true_ms(self):
        return self.epoch0_ms + self.clock.us // 1000

    def epoch_ms(self, ms=None):
        if ms is not None:
            self._rtc = (ms, self.clock.us)
            return None
        base, us0 = self._rtc
        elapsed = (self.clock.us - us0) // 1000
        return base + elapsed + elapsed * self.drift_ppm // 1_000_000

    def ntp_time(self, host):
        self.ntp_queries += 1
        if not (self.time_ok and self.wifi_connected()):
            return None
        if self.ntp_script:
            return self.ntp_script.pop(0)
        return self.true_ms()

    def wifi_connect(self, ssid, password):
        self.wifi_joins += 1
        if self.wifi_error is not None:
            raise self.wifi_error
        self.wifi_joined = True

    def wifi_disconnect(self):
        self.wifi_joined = False

    def wifi_connected(self):
        return self.wifi_joined and self.wifi_up

    def wifi_status(self):
        return "connected" if self.wifi_connected() else "access point not found"

    def wifi_rssi(self):
        return -60 if self.wifi_connected() else None

    def pulse_input(self, pin, pull_up, edge, handler, use_hw):
        self.handler = handler
        return None

    def led_setter(self, pin, inverted):
        return self.led.append

    def boot_button_held(self, pin=None):
        return self.button

    def wdt_start(self, timeout_ms):
        pass

    def wdt_feed(self):
        self.wdt_feeds += 1

    def reset(self):
        self.resets += 1
        self.cause = 1  # the next boot is a reset, not a power-up (Rig.cut_power: power-up)
        raise SystemExit("reset")

    def reset_cause(self):
        return self.cause

    def idf_heap(self):
        return self.idf


# --- sockets, as MicroPython's behave -----------------------------------------------------------


class FakeSocket:
    """A TCP connection to the FakeBroker. settimeout(None) means blocking forever, 0 means
    non-blocking (readinto() returns None when nothing is there, as MicroPython's does)."""

    def __init__(self, hal):
        self.hal = hal
        self.timeout = None
        self.inbound = bytearray()  # from the server, not read yet
        self.written = bytearray()  # everything the meter sent
        self.writes = []  # each write() call: one TCP segment (and TLS record) on the wire
        self.closed = False
        self.peer_closed = False  # the server closed its side: reads give b"" once drained
        self.tls = None  # (server_hostname, verified) once wrapped
        self.session = None
        self.timeouts = []  # every settimeout() value, in order

    @property
    def blocking(self):
        return self.timeout != 0

    def settimeout(self, t):
        self.timeouts.append(t)
        self.timeout = t

    def setblocking(self, flag):
        self.timeout = None if flag else 0

    def connect(self, addr):
        hal = self.hal
        b = hal.broker
        if not hal.wifi_connected():
            raise OSError(errno.EHOSTUNREACH, "no route")
        if b is None or b.down:
            if b is not None:
                b.refused_ms.append(b.now_ms())
            raise OSError(errno.ECONNREFUSED, "refused")
        if b.connect_script and isinstance(b.connect_script[0], BaseException):
            raise b.connect_script.pop(0)
        self.session = FakeSession(b, self)
        b.tcp.append(self.session)

    def _pump(self):
        if self.session is not None:
            self.session.deliver()

    def _wait_blocking(self):
        # A blocking read with nothing there: time passes until data is due or the timeout.
        if self.timeout is None:
            raise BlockedForever("blocking read with no timeout: the meter would hang here")
        due = self.session.next_due() if self.session else None
        now = self.hal.clock.us // 1000
        limit = now + self.timeout * 1000
        self.hal.clock.advance_ms((min(due, limit) if due is not None else limit) - now)
        self._pump()
        if not self.inbound and not self.peer_closed:
            raise OSError(errno.ETIMEDOUT, "timed out")

    def readinto(self, buf, nbytes=None):
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        self._pump()
        if not self.inbound:
            if self.peer_closed:
                return 0
            if self.timeout == 0:
                return None
            self._wait_blocking()
            if not self.inbound:
                return 0
        n = min(len(buf), len(self.inbound), nbytes if nbytes is not None else len(buf))
        buf[:n] = self.inbound[:n]
        del self.inbound[:n]
        return n

    def read(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = bytearray(n - len(out))
            got = self.readinto(chunk)
            if got is None:
                return bytes(out) if out else None
            if not got:
                break
            out += chunk[:got]
        return bytes(out)

    def write(self, buf, a=None, b=None):
        # MicroPython: write(buf), write(buf, max_len), write(buf, offset, max_len)
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        if self.peer_closed:
            raise OSError(errno.ECONNRESET, "connection reset")
        data = bytes(buf)
        if b is not None:
            data = data[a:a + b]
        elif a is not None:
            data = data[:a]
        self.written += data
        self.writes.append(data)
        if self.session is not None:
            self.session.received(data)
        return len(data)

    def close(self):
        self.closed = True


class FakePoll:
    """select.poll() over FakeSockets. A poll that nothing satisfies moves the clock on to the
    next byte a session has scheduled, or to its timeout."""

    def __init__(self, hal):
        self.hal = hal
        self.socks = {}
        self.waits = []  # every poll() timeout, in order

    def register(self, s, mask=POLLIN | POLLOUT):
        self.socks[id(s)] = (s, mask)

    def modify(self, s, mask):
        if id(s) not in self.socks:
            raise OSError(errno.ENOENT, "not registered")
        self.socks[id(s)] = (s, mask)

    def unregister(self, s):
        self.socks.pop(id(s), None)

    def _ready(self):
        out = []
        for s, mask in self.socks.values():
            s._pump()
            ev = 0
            if mask & POLLIN and (s.inbound or s.peer_closed):
                ev |= POLLIN
            if mask & POLLOUT:
                ev |= POLLOUT
            if s.peer_closed:
                ev |= POLLHUP
            if ev:
                out.append((s, ev))
        return out

    def poll(self, timeout_ms=-1):
        self.waits.append(timeout_ms)
        ready = self._ready()
        if ready or timeout_ms == 0:
            return ready
        if timeout_ms < 0:
            raise BlockedForever("poll() with no timeout: the meter would hang here")
        now = self.hal.clock.us // 1000
        dues = [d for d in (s.session.next_due() for s, _ in self.socks.values() if s.session)
                if d is not None]
        until = min([now + timeout_ms] + [max(d, now) for d in dues])
        self.hal.clock.advance_ms(until - now)
        return self._ready()

    def ipoll(self, timeout_ms=-1, flags=0):
        # MicroPython's allocation-free form (firmware/link.py waits with it): the same events,
        # as an iterator.
        return iter(self.poll(timeout_ms))


class FakeSocketModule:
    def __init__(self, hal):
        self.hal = hal
        self.dns_ok = True
        self.created = []
        self.lookups = []
        self.polls = []

    def socket(self, *args):
        s = FakeSocket(self.hal)
        self.created.append(s)
        return s

    def getaddrinfo(self, host, port, *args):
        self.lookups.append((host, port))
        if not self.dns_ok or not self.hal.wifi_connected():
            raise OSError(-2, "DNS failure")
        return [(2, 1, 0, "", (host, port))]

    def poll(self):
        # Link takes select.poll from here when the socket module has one (the boards' has not).
        p = FakePoll(self.hal)
        self.polls.append(p)
        return p


# --- TLS, as micropython-lib's ssl over MicroPython's tls module behaves ---------------------


class FakeContext:
    """ssl.SSLContext as micropython-lib builds it: verify_mode starts as CERT_NONE. With
    CERT_REQUIRED the handshake checks the broker's certificate against what was loaded and the
    server_hostname against its names, and raises ValueError with mbedTLS's texts. As mbedTLS
    runs on the ESP32, the chain's dates are checked against the RTC (the HAL's)."""

    VALID_FROM_MS = 1_700_000_000_000  # the server's certificate (and its CA): from 2023-11-14

    def __init__(self, hal, proto):
        self.hal = hal
        self.proto = proto
        self.verify_mode = FakeSslModule.CERT_NONE
        self.cadata = None
        self.loaded = []  # every certificate given, in order
        self.wrapped = []  # server_hostname of every handshake
        self.fail = None  # an exception to raise in the handshake
        self.valid_from_ms = self.VALID_FROM_MS

    def load_verify_locations(self, cafile=None, cadata=None):
        self.cadata = cadata
        self.loaded.append(cadata)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        if self.verify_mode == FakeSslModule.CERT_REQUIRED and server_hostname is None:
            raise ValueError("CERT_REQUIRED requires server_hostname")  # modtls_mbedtls.c
        b = self.hal.broker
        if b is not None and b.tls_stall:
            # The server never answers the ClientHello: mbedTLS blocks on the raw socket.
            if sock.timeout is None:
                raise BlockedForever("TLS handshake on a socket with no timeout")
            self.hal.clock.advance_ms(sock.timeout * 1000)
            raise OSError(errno.ETIMEDOUT)
        if self.fail is not None:
            raise self.fail
        if self.hal is not None and self.hal.epoch_ms() < self.valid_from_ms:
            raise ValueError("\nThe certificate validity starts in the future\n")
        verified = self.verify_mode == FakeSslModule.CERT_REQUIRED
        if verified and b is not None:
            ca, names = b.tls_cert
            if ca not in self.loaded:
                raise ValueError("The certificate is not correctly signed by the trusted CA")
            if server_hostname not in names:
                raise ValueError("The certificate Common Name (CN) does not match with the "
                                 "expected CN")
        self.wrapped.append(server_hostname)
        sock.tls = (server_hostname, verified)
        return sock


class FakeSslModule:
    PROTOCOL_TLS_CLIENT = 0
    PROTOCOL_TLS_SERVER = 1
    CERT_NONE = 0
    CERT_OPTIONAL = 1
    CERT_REQUIRED = 2

    def __init__(self, hal=None):
        self.hal = hal
        self.contexts = []

    def SSLContext(self, proto):
        ctx = FakeContext(self.hal, proto)
        self.contexts.append(ctx)
        return ctx

    def wrap_socket(self, sock, server_side=False, key=None, cert=None, cert_reqs=CERT_NONE,
                    cadata=None, server_hostname=None, do_handshake=True):
        # micropython-lib's module-level wrap_socket (python-stdlib/ssl/ssl.py): a context of
        # its own, verifying nothing unless cert_reqs says so.
        ctx = self.SSLContext(self.PROTOCOL_TLS_SERVER if server_side else self.PROTOCOL_TLS_CLIENT)
        if cadata:
            ctx.load_verify_locations(cadata=cadata)
        ctx.verify_mode = cert_reqs
        return ctx.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname)


# --- the broker -----------------------------------------------------------------------------------


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    """An MQTT packet: type byte, remaining length, body."""
    return bytes([first]) + _varint(len(body)) + body


def publish_packet(topic, payload, qos=0, pid=1):
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(0x30 | qos << 1, body)


class FakeSession:
    """The server's side of one TCP connection: parses what the meter writes, answers."""

    def __init__(self, broker, sock):
        self.broker = broker
        self.sock = sock
        self.rx = bytearray()
        self.client_id = self.user = self.pswd = None
        self.keepalive = None
        self.provision = False
        self.pending = []  # (topic, payload) the server will send, at QoS 1
        self.schedule = []  # (due ms, bytes) the server will send then
        self.subscribed = []
        self.subscribes = []  # (packet id, topic, qos)
        self.pubacks = []  # packet ids the meter acknowledged
        self.publish_ids = []  # packet ids of the meter's QoS 1 PUBLISHes
        self.pings = 0
        self.disconnected = False
        self._pid = 0

    def _raw(self):
        return self.sock

    def send(self, data, delay_ms=0):
        """Bytes to the meter, delay_ms after what was scheduled last (or after now)."""
        now = self.broker.now_ms()
        last = self.schedule[-1][0] if self.schedule else now
        self.schedule.append((max(last, now) + delay_ms, bytes(data)))

    def close(self):
        self.sock.peer_closed = True

    def next_due(self):
        return self.schedule[0][0] if self.schedule else None

    def deliver(self):
        now = self.broker.now_ms()
        while self.schedule and self.schedule[0][0] <= now:
            self.sock.inbound += self.schedule.pop(0)[1]
        while self.pending and not self.sock.peer_closed:
            topic, payload = self.pending.pop(0)
            self._pid = self._pid % 65535 + 1
            self.sock.inbound += publish_packet(bytes(topic), bytes(payload), 1, self._pid)

    def received(self, data):
        self.rx += data
        while len(self.rx) >= 2 and not self.sock.peer_closed:
            n, shift, i = 0, 0, 1
            while True:
                if i >= len(self.rx):
                    return
                b = self.rx[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            if len(self.rx) < i + n:
                return
            first, body = self.rx[0], bytes(self.rx[i:i + n])
            del self.rx[:i + n]
            self.handle(first, body)

    def handle(self, first, body):
        b = self.broker
        if b.hook is not None and b.hook(self, first, body):
            return
        kind = first & 0xF0
        if kind == 0x10:
            self._connect(body)
        elif kind == 0x30:
            qos = (first >> 1) & 3
            tl = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tl]
            off = 2 + tl
            pid = None
            if qos:
                pid = struct.unpack("!H", body[off:off + 2])[0]
                self.publish_ids.append(pid)
                off += 2
            action = b.on_publish(self, topic, body[off:], qos)
            if action == "close":
                self.close()
            elif qos == 1 and action != "drop":
                self.send(b"\x40\x02" + struct.pack("!H", pid))
        elif first == 0x82:
            pid = struct.unpack("!H", body[:2])[0]
            tl = struct.unpack("!H", body[2:4])[0]
            topic, qos = body[4:4 + tl], body[4 + tl]
            self.subscribes.append((pid, topic, qos))
            self.subscribed.append(topic)
            code = b.on_subscribe(self, topic, qos)
            if code == "close":
                self.close()
            elif code is not None:
                self.send(b"\x90\x03" + struct.pack("!H", pid) + bytes([code]))
        elif first == 0xC0:
            self.pings += 1
            if b.pingresp:
                self.send(b"\xd0\x00")
        elif first == 0xE0:
            self.disconnected = True
            self.close()
        elif first == 0x40:
            self.pubacks.append(struct.unpack("!H", body)[0])
        else:
            self.close()  # a protocol error: ThingsBoard closes the connection

    def _connect(self, body):
        b = self.broker
        i = 2 + struct.unpack("!H", body[:2])[0]
        level, flags = body[i], body[i + 1]
        self.keepalive = struct.unpack("!H", body[i + 2:i + 4])[0]
        i += 4

        def field():
            nonlocal i
            n = struct.unpack("!H", body[i:i + 2])[0]
            v = body[i + 2:i + 2 + n]
            i += 2 + n
            return v

        self.client_id = field()
        if flags & 0x04:
            field()
            field()
        self.user = field() if flags & 0x80 else None
        self.pswd = field() if flags & 0x40 else None
        self.level = level
        rc = b.on_connect(self)
        if b.connack is not None:
            for delay, data in b.connack(self, rc):
                self.send(data, delay)
            return
        self.send(b"\x20\x02\x00" + bytes([rc]))
        if rc != 0:
            self.close()  # ThingsBoard: CONNACK, then close
            return
        self.provision = self.client_id == b"provision" or self.user == b"provision"
        b.sessions.append(self)
        if not self.provision and b.close_after_connect:
            b.close_after_connect -= 1
            self.close()


class FakeBroker:
    """Scripts a ThingsBoard server, as seen through MQTT bytes."""

    def __init__(self, clock=None, key="prov-key-abc123", secret="prov-secret-xyz789"):
        self.clock = clock  # set by FakeHal so records carry the meter's time
        self.hal = None
        self.key, self.secret = key, secret  # the device profile, for TB-like provisioning
        self.down = False
        self.devices = {}  # name -> token (what the platform holds)
        self.issued = 0
        self.attributes = {}  # name -> list of attribute dicts received
        self.tokens = {}  # token -> device name
        self.basic = {}  # (clientId, userName, password) -> device name
        # Next connection attempts: an exception is raised by the TCP connect, an int is the
        # CONNACK code. Consumed in order, by every attempt (provisioning ones too).
        self.connect_script = []
        self.provision_script = []  # replies: dict, bytes, None (no reply), "close"
        self.provision_suback = "grant"  # or "refuse", "ignore"
        self.puback = {}  # topic -> "drop" (no PUBACK: timeout) or "close"
        self.close_batches_over = None  # close on a telemetry array longer than this (rate limit)
        self.close_on_subscribe = 0  # the next N normal sessions are closed when they subscribe
        self.close_after_connect = 0  # the next N normal sessions are closed right after CONNACK 0
        self.pingresp = True  # answer PINGREQs
        self.tls_cert = (b"\x30\x03der", ("tb.test", "tb.example"))  # (issuing CA, names)
        self.tls_stall = False  # the TLS handshake never gets an answer
        # hook(session, first, body) -> True when it handled the packet itself (hostile tests);
        # connack(session, rc) -> [(delay ms, bytes)] sent instead of the CONNACK.
        self.hook = None
        self.connack = None
        self.tcp = []  # every TCP connection (FakeSession), in order
        self.sessions = []  # the sessions that got CONNACK 0
        self.published = []  # (client_id, user, topic, payload, qos)
        self.publish_ms = []  # when each of them arrived
        self.provision_requests = []  # parsed request dicts
        self.connects = []  # (client_id, user, rc, ms)
        self.refused_ms = []  # TCP connection attempts while the server was down

    # decisions -------------------------------------------------------------------------------
    def on_connect(self, session):
        cid, user = session.client_id.decode(), (session.user or b"").decode()
        if self.connect_script and isinstance(self.connect_script[0], int):
            rc = self.connect_script.pop(0)
        elif user == "provision" or cid == "provision":
            rc = 0
        elif user in self.tokens:
            rc = 0
        elif (cid, user, (session.pswd or b"").decode()) in self.basic:
            rc = 0
        elif not user and session.pswd in (None, b""):
            rc = 2
        else:
            rc = 5
        self.connects.append((cid, user, rc, self.now_ms()))
        return rc

    def on_publish(self, session, topic, msg, qos):
        """What the server does with a PUBLISH: None (PUBACK it), "drop" or "close"."""
        t = topic.decode()
        self.published.append((session.client_id.decode(), (session.user or b"").decode(), t,
                               bytes(msg), qos))
        self.publish_ms.append(self.now_ms())
        if session.provision:
            if t != "/provision/request":
                return "close"
            req = json.loads(msg)
            self.provision_requests.append(req)
            reply = self.provision_script.pop(0) if self.provision_script else self.decide(req)
            if reply == "close":
                return "close"
            if reply is not None:
                body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                session.pending.append((b"/provision/response", body))
            return None
        if t == "v1/devices/me/attributes":
            self.attributes.setdefault(self.tokens.get((session.user or b"").decode()), []).append(
                json.loads(msg))
        if self.close_batches_over is not None and t == "v1/devices/me/telemetry":
            body = json.loads(bytes(msg))
            if isinstance(body, list) and len(body) > self.close_batches_over:
                self.published.pop()
                self.publish_ms.pop()
                return "close"  # rate limit: ThingsBoard closes the session
        action = self.puback.get(t)
        if qos and action == "drop":
            return "drop"
        if action == "close":
            return "close"
        return None

    def on_subscribe(self, session, topic, qos):
        """The SUBACK return code, None (no SUBACK) or "close"."""
        if session.provision:
            mode = self.provision_suback
            return {"grant": 1, "refuse": 0x80, "ignore": None}[mode]
        if self.close_on_subscribe:
            self.close_on_subscribe -= 1
            return "close"
        return min(qos, 1)

    def decide(self, req):
        # ThingsBoard's "allow create new devices" strategy (docs/thingsboard.md §2.3).
        if req.get("provisionDeviceKey") != self.key or req.get("provisionDeviceSecret") != self.secret:
            return {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
        name = req.get("deviceName")
        self.issued += 1
        token = req.get("token") or "gen-%04d-token-xyz" % self.issued
        if name in self.devices or token in self.tokens:
            return {"errorMsg": "Failed to provision device!", "status": "FAILURE"}
        self.add_device(name, token)
        return {"credentialsValue": token, "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}

    def add_device(self, name, token):
        self.devices[name] = token
        self.tokens[token] = name

    def delete_device(self, name):
        token = self.devices.pop(name)
        del self.tokens[token]

    def now_ms(self):
        return self.clock.us // 1000 if self.clock else 0

    def messages(self, topic):
        return [json.loads(p) for (_c, _u, t, p, _q) in self.published if t == topic]


# --- umqtt.simple, the real ones --------------------------------------------------------------

UMQTT_PATHS = {
    "1.3.4": os.path.join(ROOT, "lib", "umqtt", "simple.py"),  # PyPI, fetched by make lib
    "1.8.0": os.path.join(ROOT, "tests", "e2e", "umqtt180", "umqtt", "simple.py"),
}


def FakeUmqtt(broker=None, new_api=True, version=None):
    """umqtt.simple as a meter imports it: 1.8.0 (new_api, the ESP32 image's) or 1.3.4 (the
    Unix port's), loaded fresh so that Link's changes to it stay in one test. Its imports of
    MicroPython modules resolve to what a board has: `ssl` to micropython-lib's (the broker's
    FakeHal.ssl), `ussl` to whatever sys.modules holds (Link's stand-in, or nothing: an
    ImportError, as on MicroPython >= 1.23), `socket`/`usocket` to an empty module until Link
    installs its own."""
    version = version or ("1.8.0" if new_api else "1.3.4")
    path = UMQTT_PATHS[version]
    if not os.path.exists(path):
        raise RuntimeError("%s missing: run `make lib` first" % path)
    real_import = builtins.__import__
    placeholder = types.ModuleType("socket")

    def board_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name in ("socket", "usocket"):
            return placeholder
        if name == "ustruct":
            return struct
        if name == "ubinascii":
            import binascii
            return binascii
        if name == "ssl":
            if broker is None or broker.hal is None:
                raise ImportError("no ssl: the fake broker has no FakeHal")
            return broker.hal.ssl
        if name == "ussl":
            if "ussl" not in sys.modules:
                raise ImportError("no module named 'ussl'")
            return sys.modules["ussl"]
        return real_import(name, globals, locals, fromlist, level)

    mod = types.ModuleType("umqtt.simple")
    board_builtins = dict(vars(builtins))
    board_builtins["__import__"] = board_import
    mod.__dict__["__builtins__"] = board_builtins
    mod.__file__ = path
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), mod.__dict__)
    mod.VERSION = version
    return mod


def drop_ussl():
    sys.modules.pop("ussl", None)
