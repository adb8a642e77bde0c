# One MQTT connection through umqtt.simple, made safe for a meter that must never hang.
#
# umqtt.simple is used as shipped (PyPI 1.3.4 on the Unix port, the newer micropython-lib
# version frozen into ESP32 firmware). What this module adds around it:
# - Timeouts. umqtt creates its socket inside connect() with no timeout, and wait_msg() calls
#   sock.setblocking(True), which on MicroPython clears any timeout: a server that goes silent
#   mid-packet would block the meter forever. Link gives umqtt a socket factory that sets a
#   timeout, and after connect() swaps in _Guarded, which turns setblocking(True) back into
#   "blocking with our timeout".
# - TLS for both umqtt APIs. 1.3.4 takes ssl=True, ssl_params={} and does `import ussl`
#   (gone from MicroPython >= 1.23); the newer one takes ssl=<SSLContext>. The same context
#   serves both: passed directly, or behind a stand-in `ussl` module.
# - Subscribing without waiting for the SUBACK (umqtt's subscribe blocks until one arrives and
#   raises on a refusal; ThingsBoard's provisioning sessions refuse or ignore SUBSCRIBE on
#   older versions, yet still deliver the reply).
# - Byte counters for the wire-cost benchmark.

import struct
import sys

from micropython import const

_SUBACK = const(0x90)
_PUBACK = const(0x40)
_UNSUBACK = const(0xB0)
_PUBLISH = const(0x30)
_MAX_PACKET = const(4096)  # the largest thing a meter reads: a provisioning reply, an RPC
_WBUF = const(256)  # coalesced writes (_Guarded): a whole single-reading PUBLISH fits
_EMSGSIZE = const(90)


class LinkError(Exception):
    """The connection failed or went silent: retry later, with backoff."""


# Socket errors as a technician should read them (Linux and lwIP share these numbers; DNS
# failures are negative: -2 from getaddrinfo on Linux, -202 from lwIP on ESP32).
_ERRNO = {90: "oversized packet from the server refused", 104: "connection reset",
          110: "timed out", 111: "connection refused",
          113: "host unreachable", 118: "host unreachable", -2: "name not resolved",
          -202: "name not resolved", -1: "connection closed by the server"}


def describe(e):
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        return _ERRNO.get(e.args[0], "socket error %d" % e.args[0])
    if isinstance(e, ValueError):  # mbedTLS certificate verification
        return "TLS: " + " ".join(str(e).split())
    if isinstance(e, (IndexError, AssertionError)):
        return "garbled reply (not an MQTT broker?)"
    return "%s %s" % (type(e).__name__, e)


class _SocketFactory:
    # Installed as umqtt.simple's `socket` module: the only way to reach the socket umqtt
    # creates inside connect() before it blocks on DNS, TCP and the CONNACK.
    def __init__(self, sockmod, timeout_s):
        self._m = sockmod
        self.timeout_s = timeout_s
        self.raw = None

    def socket(self, *args):
        s = self._m.socket(*args)
        s.settimeout(self.timeout_s)
        self.raw = s
        return s

    def getaddrinfo(self, *args):
        return self._m.getaddrinfo(*args)


class _Ussl:
    # Stand-in for the `ussl` module that umqtt.simple 1.3.4 imports inside connect().
    def __init__(self):
        self.ctx = None

    def wrap_socket(self, sock, server_hostname=None, **_ignored):
        # ctx is set by Link before umqtt calls this; pyright only sees the None in __init__.
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname)  # pyright: ignore[reportAttributeAccessIssue]


class _Guarded:
    # What umqtt sees as its socket after connect(): the real (or TLS) socket, with a timeout
    # that survives wait_msg()'s setblocking(True), byte counters, and write coalescing.
    #
    # umqtt.simple writes one MQTT packet in up to five pieces (header, topic length, topic,
    # packet id, payload). Sent as they come, each is a TCP segment, and under TLS a record of
    # its own (about 29 bytes of overhead each), and Nagle's algorithm holds the later pieces
    # until the first is acknowledged (delayed ACK: up to 40 ms with the main loop blocked in a
    # QoS 1 publish). Small pieces are gathered in a buffer allocated once per Link and sent
    # as one write before anything is read, or when the Link's call ends (flush()).
    def __init__(self, sock, raw, timeout_s, stats, wbuf):
        self._s = sock
        self._raw = raw  # the TCP socket under TLS: timeouts live there
        self.timeout_s = timeout_s
        self._stats = stats
        self._wbuf = wbuf
        self._wn = 0

    def setblocking(self, flag):
        if flag:
            self._raw.settimeout(self.timeout_s)
        else:
            self.flush()  # still blocking (with the timeout): a pending write cannot half-fail
            self._s.setblocking(False)

    def read(self, n):
        if n > _MAX_PACKET:
            # umqtt reads a packet body in one call: refusing here, before allocating, is what
            # keeps a hostile or broken server from exhausting the heap.
            raise OSError(_EMSGSIZE)
        self.flush()
        data = self._s.read(n)
        if data:
            self._stats[1] += len(data)
        return data

    def write(self, buf, n=None):
        if n is None:
            n = len(buf)
        self._stats[0] += n
        wbuf, k = self._wbuf, self._wn
        if k + n <= len(wbuf):
            wbuf[k:k + n] = buf if n == len(buf) else memoryview(buf)[:n]
            self._wn = k + n
            return n
        self.flush()  # a large piece (a batch of readings) goes straight after what is pending
        return self._s.write(buf, n)

    def flush(self):
        if self._wn:
            k, self._wn = self._wn, 0
            self._s.write(self._wbuf, k)

    def close(self):
        try:
            self.flush()  # a DISCONNECT, when closing politely
        finally:
            self._s.close()


class Link:
    def __init__(self, umqtt, sockmod, ticks_ms, ticks_diff, log, timeout_s=15):
        self._umqtt = umqtt
        self._factory = _SocketFactory(sockmod, timeout_s)
        umqtt.socket = self._factory
        self._ussl = None
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self._log = log
        self.timeout_s = timeout_s
        self._c = None
        self.on_message = None  # callback(topic: bytes, payload: bytes)
        self.stats = [0, 0]  # bytes sent, bytes received (all connections)
        self._wbuf = bytearray(_WBUF)
        self.suback = None  # return code of the last SUBACK seen by wait(), None if none

    # --- connection -------------------------------------------------------------------------

    def _client(self, host, port, client_id, user, password, keepalive_s, tls):
        M = self._umqtt.MQTTClient
        if tls is None:
            return M(client_id, host, port, user, password, keepalive_s)
        try:
            c = M(client_id, host, port, user, password, keepalive_s,
                  ssl=True, ssl_params={"server_hostname": host})
        except TypeError:
            return M(client_id, host, port, user, password, keepalive_s, ssl=tls)  # newer API
        if self._ussl is None:
            self._ussl = _Ussl()
        self._ussl.ctx = tls
        sys.modules["ussl"] = self._ussl  # pyright: ignore[reportArgumentType]  (a stand-in module)
        return c

    @property
    def connected(self):
        return self._c is not None

    def open(self, host, port, client_id, user, password, keepalive_s, tls=None):
        """Connect. Returns 0, or the broker's CONNACK refusal code. Raises LinkError."""
        self.close()
        c = self._client(host, port, client_id.encode(), user.encode() if user else b"",
                         password.encode() if password else b"", keepalive_s, tls)
        c.set_callback(self._dispatch)
        self._factory.raw = None
        try:
            c.connect()
        except self._umqtt.MQTTException as e:
            self._discard(c)
            return e.args[0] if e.args else -1
        except Exception as e:  # DNS, refused, timeout, TLS verification, garbled CONNACK
            self._discard(c)
            raise LinkError("connect to %s:%d failed: %s" % (host, port, describe(e)))
        c.sock = _Guarded(c.sock, self._factory.raw, self.timeout_s, self.stats, self._wbuf)
        self._c = c
        return 0

    def _discard(self, c):
        if c.sock is not None:
            try:
                c.sock.close()
            except Exception:
                pass
            c.sock = None

    def close(self, graceful=True):
        c = self._c
        self._c = None
        if c is None:
            return
        if graceful:
            try:
                c.disconnect()  # DISCONNECT, then close
                return
            except Exception:
                pass
        self._discard(c)

    # --- traffic ----------------------------------------------------------------------------

    def _dispatch(self, topic, msg):
        if self.on_message is not None:
            self.on_message(topic, msg)

    def _fail(self, what, e):
        self.close(graceful=False)
        raise LinkError("%s: %s" % (what, describe(e)))

    def publish(self, topic, payload, qos=0):
        """Send; with qos=1 return only after the PUBACK (LinkError if none in time)."""
        if self._c is None:
            raise LinkError("publish: not connected")
        try:
            self._c.publish(topic, payload, False, qos)
            self._c.sock.flush()  # QoS 0: nothing is read after it
        except Exception as e:
            self._fail("publish to %s" % topic.decode(), e)

    def subscribe(self, topic, qos=1):
        """Subscribe and wait for the SUBACK. Returns False when the server refused it."""
        try:
            self._c.subscribe(topic, qos)
            return True
        except self._umqtt.MQTTException:
            return False
        except Exception as e:
            self._fail("subscribe to %s" % topic.decode(), e)

    def subscribe_nowait(self, topic, qos=1):
        # A SUBSCRIBE whose SUBACK is consumed later by wait(), if it ever comes.
        c = self._c
        c.pid = (c.pid % 65535) + 1
        pkt = bytearray(b"\x82\0\0\0")
        struct.pack_into("!BH", pkt, 1, 2 + 2 + len(topic) + 1, c.pid)
        try:
            c.sock.write(pkt)
            c.sock.write(struct.pack("!H", len(topic)))
            c.sock.write(topic)
            c.sock.write(bytes((qos,)))
            c.sock.flush()
        except Exception as e:
            self._fail("subscribe to %s" % topic.decode(), e)

    def poll(self):
        """Handle whatever the server sent, without blocking when it sent nothing."""
        if self._c is None:
            return
        try:
            op = self._c.check_msg()
            if op is not None:
                self._after(op)
            if self._c is not None:
                self._c.sock.flush()  # e.g. the PUBACK for a QoS 1 message from the server
        except LinkError:
            raise
        except Exception as e:
            self._fail("receive", e)

    def wait(self, timeout_ms, done):
        """Handle incoming packets until done() is true or timeout_ms passes. Returns done()."""
        start = self._ticks_ms()
        c = self._c
        try:
            while not done():
                left = timeout_ms - self._ticks_diff(self._ticks_ms(), start)
                if left <= 0:
                    return False
                c.sock.timeout_s = left / 1000 if left < self.timeout_s * 1000 else self.timeout_s
                c.sock.setblocking(True)
                op = c.wait_msg()
                if op is not None:
                    self._after(op)
            return True
        except LinkError:
            raise
        except Exception as e:
            self._fail("receive", e)
        finally:
            if self._c is not None:
                self._c.sock.timeout_s = self.timeout_s

    def _after(self, op):
        # wait_msg() handles PUBLISH and PINGRESP itself and returns any other packet type
        # with its body unread; read it so the stream stays in step.
        kind = op & 0xF0
        if kind == _PUBLISH:
            return
        sock = self._c.sock
        if kind == _SUBACK:
            body = sock.read(4)  # remaining length 3, packet id, return code
            self.suback = body[3]
        elif kind in (_PUBACK, _UNSUBACK):
            sock.read(3)  # a late acknowledgement: nothing waits for it any more
        else:
            raise LinkError("unexpected packet type 0x%02x" % op)

    def ping(self):
        try:
            self._c.ping()
            self._c.sock.flush()
        except Exception as e:
            self._fail("ping", e)
