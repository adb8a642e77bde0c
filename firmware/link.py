# One MQTT session for a meter that must never hang, whatever its server sends.
#
# umqtt.simple opens the session: micropython-lib's 1.8.0 frozen into the ESP32 image, PyPI
# 1.3.4 on the Unix port (docs/esp32.md, "umqtt.simple on the board"). Everything around and
# after that is this module's:
# - One object, _Net, is umqtt's `socket` module and the socket umqtt writes the CONNECT to;
#   the TLS layer both versions call wrap_socket() on (1.8.0: the `ssl=` object; 1.3.4: the
#   `ussl` module it imports) is firmware/connect.py, where Link.open() runs (loaded for each
#   connect only), and wraps _Net's socket. So the TCP connect, the TLS handshake and the
#   CONNACK run under this module's deadline whatever timeout umqtt sets (1.8.0's connect(timeout=None) calls
#   settimeout(None), which means forever), and TLS always uses the SSLContext verified at boot
#   with the configured host name. ssl=True is never passed: 1.8.0 would then call
#   micropython-lib's ssl.wrap_socket(), which by default verifies nothing.
# - The CONNACK is GUARDED: checked whole here (umqtt checks it with an assert, which mpy-cross
#   -O2 removes: tools/build_device.py compiles with -O2).
# - Everything after it is REPLACED: umqtt's reader trusts the server (a remaining length of
#   any size and any number of bytes, a topic length beyond the packet making read(-7), asserts
#   that -O2 removes, ack loops that run as long as other packets keep coming, packet ids that
#   pass 65535). This module reads every packet itself, checking the framing before anything is
#   allocated or read (at most 4 length bytes and _MAX_PACKET bytes, the topic inside the
#   packet, no QoS 2, only packet types a client can be sent, acks only for the id it sent), and
#   writes its own PUBLISH, SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT.
# - A deadline per exchange, not per read: CONNECT->CONNACK (with TCP and TLS), SUBSCRIBE->
#   SUBACK, PUBLISH->PUBACK, PINGREQ->PINGRESP end timeout_s after they start, wait() when its
#   caller says. After the handshake the socket is non-blocking and waits in select.poll() for
#   what is left, so a server that dribbles a byte a second, or sends PINGRESPs or PUBLISHes
#   instead of the ack, cannot hold the meter past it. DNS runs before the deadline starts
#   (lwIP bounds it, not this module); with `wdt_feed`, the watchdog is fed before DNS, after
#   it, and when each exchange starts, so no two add up (README: deadlines).
# - Packet ids are this module's too: they start again at 1 with every session and go from
#   65535 back to 1 (umqtt's grow past 65535, which packs as 0 on MicroPython).
# - Unsolicited input is bounded: poll() handles at most _POLL_PACKETS packets, never waits
#   for one to start, and allocates nothing when nothing came.
#
# The Link API (firmware/meter.py, firmware/remote.py, firmware/provision.py):
#   Link(umqtt, sockmod, ticks_ms, ticks_diff, log, timeout_s=10, wdt_feed=None)
#       umqtt: the umqtt.simple module (or a stand-in), or None: imported by open() for each
#       connect() and unloaded after it (as firmware/connect.py, which open() runs)
#   open(host, port, client_id, user, password, keepalive_s, tls=None) -> 0, or the server's
#       CONNACK refusal code (1..5). tls: the SSLContext made at boot.
#   close(graceful=True)            DISCONNECT (graceful), then close the socket
#   connected                       True from a successful open() to close() or a failure
#   publish(topic, payload, qos=0)  qos 1: returns after the PUBACK
#   subscribe(topic, qos=1)         waits for the SUBACK; False when the server refused (0x80)
#   subscribe_nowait(topic, qos=1)  the SUBACK is handled later by poll()/wait()
#   suback                          return code of the last SUBACK (None until one came)
#   poll()                          handle what has arrived, without waiting for anything
#   wait(timeout_ms, done)          handle packets until done() is true or timeout_ms passed;
#                                   returns done() (False at the deadline, session kept)
#   ping()                          send a PINGREQ; .pinged holds its ticks_ms until the PINGRESP
#                                   comes; poll() raises LinkError when none came timeout_s after
#                                   it (keepalive: ping when quiet_ms() nears keepalive_s, poll
#                                   every loop as now)
#   quiet_ms()                      ms since the meter last sent anything (when to ping)
#   on_message                      callback(topic: bytearray, payload: bytearray), called
#                                   from poll(), wait() and while waiting for an ack
#   stats                           [bytes sent, bytes received], all sessions
#   pid                             the last packet id sent
#   timeout_s                       every exchange's deadline (default 10 s)
# Every failure raises LinkError and leaves the session closed (wait() past its deadline
# returns False instead). The fake network of the unit tests passes its own poll() through
# sockmod; on the boards sockmod has none and select.poll() is used.

from micropython import const

_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
# The largest packet a meter takes: a provisioning reply (at most 2.5 KB: firmware/reply.py)
# with its topic. RPC requests and shared attributes for a meter are far smaller, and a larger
# buffer is what a fragmented heap is least likely to have.
_MAX_PACKET = const(3072)
_POLL_PACKETS = const(8)  # per poll(): a flood waits for the next loop, telemetry does not
_WBUF = const(256)  # coalesced writes: a whole single-reading PUBLISH fits
_CLOSE_MS = const(1000)  # for the DISCONNECT of a graceful close
_POLLIN = const(1)  # select.POLLIN, POLLOUT: the same values on every MicroPython port
_POLLOUT = const(4)
_ETIMEDOUT = const(110)
_CLOSED = const(-1)  # as umqtt.simple signals a connection closed by the server


class LinkError(Exception):
    """The connection failed, went silent or broke the protocol: retry later, with backoff."""


# Socket errors as a technician should read them (Linux and lwIP share these numbers; DNS
# failures are negative: -2 from getaddrinfo on Linux, -202 from lwIP on ESP32).
_ERRNO = {104: "connection reset", 110: "timed out", 115: "timed out", 111: "connection refused",
          113: "host unreachable", 118: "host unreachable", -2: "name not resolved",
          -202: "name not resolved", -1: "connection closed by the server"}


def describe(e):
    if isinstance(e, LinkError):
        return e.args[0]
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        code = e.args[0]
        if code in _ERRNO:
            return _ERRNO[code]
        if code < 0 and len(e.args) > 1:  # mbedTLS: (-code, "MBEDTLS_ERR_...")
            return "TLS: " + str(e.args[1])
        return "socket error %d" % code
    if isinstance(e, MemoryError):  # a heap too fragmented for what came: try again later
        return "not enough memory (%s)" % e
    if isinstance(e, ValueError):  # mbedTLS certificate verification
        return "TLS: " + " ".join(str(e).split())
    return "%s %s" % (type(e).__name__, e)


class _Net:
    # What umqtt.simple sees as its `socket` module, its socket and its TLS layer, and what
    # Link reads and writes through: every byte of a session passes here, under a deadline.
    def __init__(self, sockmod, poll, ticks_ms, ticks_diff, stats):
        self._m = sockmod
        self._poll = poll
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self.stats = stats  # the Link's: [bytes sent, bytes received]
        self._raw = None  # the TCP socket: its timeout governs the handshake
        self._s = None  # what is read and written: _raw, or the TLS socket over it
        self.server = None  # its address, resolved before umqtt's connect() (DNS is no exchange)
        self.ctx = None  # the verified SSLContext, or None for plain MQTT
        self.host = None
        self._t0 = 0  # the exchange deadline: _window_ms after ticks _t0
        self._window_ms = 0
        self._since = 0  # ticks_ms of the last write
        self._buf = bytearray(1)
        # umqtt.simple writes a packet in up to five pieces; sent as they come, each would be a
        # TCP segment (and a TLS record: 29 bytes more) held by Nagle's algorithm. Gathered in a
        # buffer allocated once and sent as one write before anything is awaited.
        self._wbuf = bytearray(_WBUF)
        self._wn = 0

    # --- the deadline -----------------------------------------------------------------------

    def start(self, ms):
        self._t0 = self._ticks_ms()
        self._window_ms = ms

    def timeout(self):
        # What is left of the deadline, in ms.
        return self._window_ms - self._ticks_diff(self._ticks_ms(), self._t0)

    def wait(self, mask):
        # Until the socket is ready or the deadline. Past it: OSError(ETIMEDOUT), or False
        # with mask 0 (waiting for the next packet to start: nothing is broken then).
        left = self.timeout()
        if left <= 0:
            if not mask:
                return False
            raise OSError(_ETIMEDOUT)
        if mask == _POLLOUT:
            self._poll.modify(self._s, mask)
        # ipoll, not poll: poll() makes a new list at every wait (every PUBACK awaited); ipoll
        # reuses one result tuple.
        for _ in self._poll.ipoll(left):
            break
        if mask == _POLLOUT:
            self._poll.modify(self._s, _POLLIN)
        return True

    # --- umqtt.simple's `socket` module and socket --------------------------------------------

    def socket(self, *args):
        self._raw = self._s = self._m.socket(*args)
        return self

    def getaddrinfo(self, host, port, *args):
        return self.server

    def settimeout(self, t):
        pass  # 1.8.0 passes None (forever); the deadline rules instead

    def connect(self, *args):
        raw = self._raw
        left = self.timeout()
        if left <= 0:
            raise OSError(_ETIMEDOUT)
        raw.settimeout(left / 1000)  # ports/esp32/modsocket.c: connect() honours it
        raw.connect(*args)
        if self.ctx is None:
            raw.setblocking(False)
            self._poll.register(raw, _POLLIN)

    def read(self, n):
        # umqtt's connect() reads through here once: the CONNACK. Checked whole, because
        # umqtt would take any 4 bytes for one once -O2 has removed its assert.
        b = bytearray(n)
        self.fill(b)
        if n != 4:
            raise LinkError("umqtt.simple read %d CONNACK bytes, not 4" % n)
        if b[0] != 0x20 or b[1] != 2 or b[2] & 0xFE or b[3] > 5:
            raise LinkError("not a CONNACK: %02x %02x %02x %02x" % (b[0], b[1], b[2], b[3]))
        return bytes(b)

    def write(self, buf, n=None):
        if n is None:
            n = len(buf)
        self.stats[0] += n
        k = self._wn
        if k + n > _WBUF:
            self.flush()  # a large piece (a batch of readings) goes straight after what is pending
            self.send(buf, n)
            return n
        wbuf = self._wbuf
        if n < 8:  # headers, lengths, packet ids: byte by byte, which allocates nothing
            for i in range(n):
                wbuf[k + i] = buf[i]
        else:
            wbuf[k:k + n] = buf if n == len(buf) else memoryview(buf)[:n]
        self._wn = k + n
        return n

    def flush(self):
        k = self._wn
        if k:
            self._wn = 0
            self.send(self._wbuf, k)

    def send(self, buf, n):
        s = self._s
        done = 0
        while done < n:
            k = s.write(buf, done, n - done)
            if k is None:  # the send buffer is full: wait, within the deadline
                self.wait(_POLLOUT)
            else:
                done += k
        self._since = self._ticks_ms()

    def close(self):
        s = self._s
        self._s = self._raw = None
        self._wn = 0
        if s is not None:
            try:
                self._poll.unregister(s)
            except (OSError, KeyError, ValueError):
                pass  # never registered: the handshake failed
            try:
                s.close()
            except OSError:
                pass

    # --- reading, within the deadline ----------------------------------------------------------

    def fill(self, buf):
        # Exactly len(buf) bytes, or OSError.
        self.flush()
        s = self._s
        n = len(buf)
        k = 0
        while k < n:
            got = s.readinto(buf if k == 0 else memoryview(buf)[k:])
            if got is None:
                self.wait(_POLLIN)
            elif not got:
                raise OSError(_CLOSED)
            else:
                k += got
        self.stats[1] += n

    def _read(self):
        # One byte, without allocating (fill() reads straight into a whole buffer).
        self.fill(self._buf)
        return self._buf[0]

    def peek(self):
        # The first byte of the next packet if it has arrived, else -1; never waits.
        got = self._s.readinto(self._buf)
        if got is None:
            return -1
        if not got:
            raise OSError(_CLOSED)
        self.stats[1] += 1
        return self._buf[0]


class Link:
    def __init__(self, umqtt, sockmod, ticks_ms, ticks_diff, log, timeout_s=10, wdt_feed=None):
        self._umqtt = umqtt  # None: umqtt.simple, imported for each connect() only (open())
        poll = getattr(sockmod, "poll", None)
        if poll is None:
            import select
            poll = select.poll
        self.stats = [0, 0]
        self._net = _Net(sockmod, poll(), ticks_ms, ticks_diff, self.stats)
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self._log = log
        self.wdt_feed = wdt_feed or (lambda: None)  # fed as each exchange starts
        self.timeout_s = timeout_s
        self.connected = False
        self.on_message = None
        self.suback = None
        self.pinged = None
        self.pid = 0  # the last packet id sent
        self._armed = 0  # the ack awaited: its type << 16 | its packet id; 0 when none
        self._nsub = 0  # packet id of a subscribe_nowait() whose SUBACK has not come
        self._buf = bytearray(b"\x40\x02\0\0\0")  # headers are built here; a PUBACK as made

    # --- session ----------------------------------------------------------------------------

    def open(self, host, port, client_id, user, password, keepalive_s, tls=None):
        """Connect. Returns 0, or the server's CONNACK refusal code. Raises LinkError."""
        self.close()
        # What runs only while a session opens lives in firmware/connect.py, loaded for this
        # connect and unloaded after it (as umqtt.simple is): the connect, with the TLS
        # handshake, is the heap's high point, and between connects the code need not stay.
        # It is a part of this module in a file of its own: this method's body and a _Net
        # method (wrap_socket); it sets up the _Net, and the session starts below.
        from firmware import unload
        try:
            from firmware import connect
        except MemoryError as e:  # no room to load it: a failed connect (backoff), not a crash
            unload("connect")
            raise LinkError("connect to %s:%d failed: %s" % (host, port, describe(e)))
        try:
            rc = connect.open(self, host, port, client_id, user, password, keepalive_s, tls)
        finally:
            del connect
            unload("connect")
        if rc == 0:
            # A clean session: nothing is in flight, packet ids start again. (Set here, not in
            # firmware/connect.py: that module sets up the _Net only, see its head.)
            self.pid = self._armed = self._nsub = 0
            self.pinged = self.suback = None
            self.connected = True
        return rc

    def close(self, graceful=True):
        up = self.connected
        self.connected = False
        net = self._net
        if up and graceful:
            try:
                net.start(_CLOSE_MS)
                net.write(b"\xe0\0")
                net.flush()
            except Exception:
                pass
        net.close()

    def _fail(self, what, e):
        self.close(graceful=False)
        raise LinkError("%s: %s" % (what, describe(e)))

    def _check(self, what):
        if not self.connected:
            raise LinkError("%s: not connected" % what)

    # --- sending ----------------------------------------------------------------------------

    def _head(self, first, n):
        # A fixed header: the packet type, then the remaining length, 7 bits a byte.
        h = self._buf
        h[0] = first
        i = 1
        while n > 0x7F:
            h[i] = (n & 0x7F) | 0x80
            n >>= 7
            i += 1
        h[i] = n
        self._net.write(h, i + 1)

    def _write(self, v):
        # A two-byte integer: a length or a packet id.
        h = self._buf
        h[0] = v >> 8
        h[1] = v & 0xFF
        self._net.write(h, 2)

    def publish(self, topic, payload, qos=0):
        """Send; with qos=1 return only after the PUBACK (LinkError if none in time)."""
        self._check("publish")
        if qos:
            self.wdt_feed()
        net = self._net
        try:
            net.start(self.timeout_s * 1000)
            self._head(_PUBLISH | qos << 1, 2 + len(topic) + len(payload) + (2 if qos else 0))
            self._write(len(topic))
            net.write(topic)
            if qos:
                self.pid = self.pid % 65535 + 1
                self._write(self.pid)
            net.write(payload)
            if qos:
                self._acknowledged(_PUBACK, self.pid)
            else:
                net.flush()
        except Exception as e:
            self._fail("publish to %s" % topic.decode(), e)

    def subscribe_nowait(self, topic, qos=1):
        # A SUBSCRIBE whose SUBACK poll() or wait() will handle, if it ever comes.
        self._check("subscribe")
        net = self._net
        try:
            net.start(self.timeout_s * 1000)
            self.pid = self.pid % 65535 + 1
            self._head(0x82, 2 + 2 + len(topic) + 1)
            self._write(self.pid)
            self._write(len(topic))
            net.write(topic)
            h = self._buf
            h[0] = qos
            net.write(h, 1)
            net.flush()
        except Exception as e:
            self._fail("subscribe to %s" % topic.decode(), e)
        self._nsub = self.pid

    def subscribe(self, topic, qos=1):
        """Subscribe and wait for the SUBACK. Returns False when the server refused it."""
        self.wdt_feed()
        pending = self._nsub
        self.subscribe_nowait(topic, qos)
        self._nsub = pending  # this one's SUBACK is awaited here
        try:
            self._net.start(self.timeout_s * 1000)
            self._acknowledged(_SUBACK, self.pid)
        except Exception as e:
            self._fail("subscribe to %s" % topic.decode(), e)
        return self.suback != 0x80

    def ping(self):
        """Send a PINGREQ; .pinged holds its ticks_ms until the PINGRESP comes, and poll() raises
        LinkError when none has come timeout_s after it."""
        self._check("ping")
        net = self._net
        try:
            net.start(self.timeout_s * 1000)
            if self.pinged is None:
                self.pinged = self._ticks_ms()
            net.write(b"\xc0\0")
            net.flush()
        except Exception as e:
            self._fail("ping", e)

    def quiet_ms(self):
        return self._ticks_diff(self._ticks_ms(), self._net._since)

    # --- receiving --------------------------------------------------------------------------

    def poll(self):
        """Handle whatever the server sent, without waiting for anything to start."""
        if not self.connected:
            return
        net = self._net
        try:
            net.start(self.timeout_s * 1000)  # for the rest of a packet that has started
            for _ in range(_POLL_PACKETS):
                b = net.peek()
                if b < 0:
                    break
                self._handler(b)
            if self.pinged is not None and \
                    self._ticks_diff(self._ticks_ms(), self.pinged) > self.timeout_s * 1000:
                raise LinkError("no PINGRESP within %d s" % self.timeout_s)
            net.flush()  # e.g. the PUBACKs of QoS 1 messages from the server
        except Exception as e:
            self._fail("receive", e)

    def wait(self, timeout_ms, done):
        """Handle incoming packets until done() is true or timeout_ms passes. Returns done()."""
        self._check("receive")
        self.wdt_feed()
        net = self._net
        try:
            net.start(timeout_ms)
            while not done():
                b = net.peek()
                if b >= 0:
                    self._handler(b)
                else:
                    net.flush()
                    if not net.wait(0):
                        return done()
            net.flush()
            return True
        except Exception as e:
            self._fail("receive", e)

    def _acknowledged(self, op, pid):
        # Handle packets until the ack of type op for packet pid, within the deadline.
        self._armed = op << 16 | pid
        net = self._net
        while self._armed:
            self._handler(net._read())

    def _handler(self, first):
        # The rest of the packet whose first byte is `first`, within the deadline: its length
        # is checked before anything of it is allocated or read.
        net = self._net
        n = 0
        shift = 0
        for _ in range(4):
            b = net._read()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        else:
            raise LinkError("packet 0x%02x: length over 4 bytes" % first)
        if n > _MAX_PACKET:
            raise LinkError("packet 0x%02x of %d bytes refused (limit 3072)" % (first, n))
        if first & 0xF0 == _PUBLISH:
            self._msg(first, n)
        elif (first == _PUBACK and n == 2) or (first == _SUBACK and n == 3):
            pid = net._read() << 8
            pid |= net._read()
            code = net._read() if first == _SUBACK else 0
            if code not in (0, 1, 2, 0x80):
                raise LinkError("SUBACK return code 0x%02x" % code)
            if first == _SUBACK and pid == self._nsub:
                self._nsub = 0
                self.suback = code
            elif (first << 16 | pid) == self._armed:
                self._armed = 0
                if first == _SUBACK:
                    self.suback = code
            else:
                raise LinkError("ack 0x%02x for packet %d, not awaited" % (first, pid))
        elif first == _PINGRESP and n == 0:
            self.pinged = None  # one that was never asked for is harmless
        else:
            raise LinkError("unexpected packet 0x%02x of %d bytes" % (first, n))

    def _msg(self, first, n):
        # A PUBLISH from the server; QoS 1 is acknowledged, QoS 2 is a protocol error here
        # (the meter subscribes at QoS 1 at most).
        qos = (first >> 1) & 3
        if qos > 1:
            raise LinkError("PUBLISH at QoS %d refused" % qos)
        net = self._net
        head = 4 if qos else 2
        if n < head:
            raise LinkError("PUBLISH of %d bytes" % n)
        size = net._read() << 8
        size |= net._read()
        rest = n - head - size
        if size == 0 or rest < 0:
            raise LinkError("PUBLISH topic of %d bytes in %d" % (size, n))
        topic = self.take(size)
        pid = 0
        if qos:
            pid = net._read() << 8
            pid |= net._read()
            if not pid:
                raise LinkError("PUBLISH with packet id 0")
        msg = self.take(rest)
        if qos:
            h = self._buf
            h[0] = _PUBACK
            h[1] = 2
            h[2] = pid >> 8
            h[3] = pid & 0xFF
            net.write(h, 4)  # sent before the next wait, or at the end of poll()
        if self.on_message is not None:
            self.on_message(topic, msg)

    def take(self, n):
        # n bytes of a PUBLISH, in a buffer of their own (a MemoryError here drops the session,
        # as any failure to read does).
        buf = bytearray(n)
        self._net.fill(buf)
        return buf
