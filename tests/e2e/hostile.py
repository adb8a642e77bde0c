"""A hostile MQTT server for the end-to-end tests: raw sockets, a scripted behaviour per
connection, and a record of everything the meter did, with host timestamps.

    server = HostileServer([scenario_0, scenario_1, ...])   # connection i runs scenario i
                                                             # (the last one from then on)
    ... the meter connects to server.port ...
    server.stop()                                            # then tbsim takes the port over

A scenario is a function(conn). It reads what the meter sends (conn.packet(), conn.expect())
and sends whatever it likes (conn.send()): bytes a broken proxy or an attacker would send, or
what a ThingsBoard would (honest()). When it returns, the server keeps reading until the meter
closes the connection (conn.closed is then the time it did), so every connection has an end.
"""

import json
import socket
import struct
import threading
import time

PINGRESP = b"\xd0\x00"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def publish(topic, payload, qos=0, pid=1):
    if isinstance(topic, str):
        topic = topic.encode()
    if isinstance(payload, str):
        payload = payload.encode()
    return packet(0x30 | qos << 1, struct.pack("!H", len(topic)) + topic +
                  (struct.pack("!H", pid) if qos else b"") + payload)


class Conn:
    """One TCP connection from the meter, as a scenario sees it."""

    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.opened = time.time()
        self.closed = None  # when the meter closed it (EOF), or the server gave up
        self.packets = []  # (time, first byte, body) of every packet the meter sent
        self.connect = None  # the CONNECT: {"client_id", "user", "password", "t"}
        self.sent = []  # (time, bytes) the server sent
        self._rx = bytearray()
        sock.settimeout(0.1)

    # --- sending --------------------------------------------------------------------------------
    def send(self, data):
        self.sent.append((time.time(), bytes(data)))
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def dribble(self, data, every_s):
        for i in range(len(data)):
            if self.closed:
                return
            self.send(data[i:i + 1])
            self._sleep(every_s)

    def _sleep(self, seconds):
        # Sleep, noticing a close by the meter meanwhile.
        end = time.time() + seconds
        while time.time() < end and not self.closed:
            self._fill(min(end, time.time() + 0.1))

    # --- receiving ------------------------------------------------------------------------------
    def _fill(self, deadline):
        # More bytes from the meter: True, False at the deadline, None once it has closed.
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if time.time() >= deadline:
                    return False
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = self.closed or time.time()
                return None
            self._rx += chunk
            return True

    def _parse(self):
        rx = self._rx
        if len(rx) < 2:
            return None
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(rx) or i > 4:
                return None
            b = rx[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
        if len(rx) < i + n:
            return None
        first, body = rx[0], bytes(rx[i:i + n])
        del rx[:i + n]
        now = time.time()
        self.packets.append((now, first, body))
        if first == 0x10 and self.connect is None:
            self.connect = dict(_connect_fields(body), t=now)
        return first, body

    def packet(self, timeout=30):
        """The next packet from the meter as (first byte, body); None once it has closed."""
        deadline = time.time() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.closed:
                return None
            got = self._fill(deadline)
            if got is None:
                return self._parse()
            if got is False:
                raise TimeoutError("the meter sent nothing for %s s" % timeout)

    def expect(self, kind, timeout=30):
        """Read packets until one of type `kind` (high nibble); its (first, body), or None."""
        while True:
            p = self.packet(timeout)
            if p is None or p[0] & 0xF0 == kind:
                return p

    def until_closed(self, timeout=60):
        """Read (and record) everything until the meter closes; the time it did, or None."""
        deadline = time.time() + timeout
        while not self.closed and time.time() < deadline:
            self._parse()
            if self._fill(deadline) is None:
                break
        while self._parse():
            pass
        return self.closed

    def close(self):
        self.closed = self.closed or time.time()
        try:
            self.sock.close()
        except OSError:
            pass

    # --- what the meter did -----------------------------------------------------------------------
    def published(self, topic=None):
        out = []
        for t, first, body in self.packets:
            if first & 0xF0 == 0x30:
                n = struct.unpack("!H", body[:2])[0]
                top = body[2:2 + n].decode()
                off = 2 + n + (2 if first & 0x06 else 0)
                if topic is None or top == topic:
                    out.append((t, top, body[off:]))
        return out


def _connect_fields(body):
    i = 2 + struct.unpack("!H", body[:2])[0]
    flags = body[i + 1]
    i += 4

    def field():
        nonlocal i
        n = struct.unpack("!H", body[i:i + 2])[0]
        v = body[i + 2:i + 2 + n]
        i += 2 + n
        return v.decode("utf-8", "replace")

    cid = field()
    if flags & 0x04:
        field()
        field()
    user = field() if flags & 0x80 else None
    pw = field() if flags & 0x40 else None
    return {"client_id": cid, "user": user, "password": pw}


class HostileServer:
    def __init__(self, scenarios, port=0, hold_s=60):
        self.scenarios = scenarios if isinstance(scenarios, (list, tuple)) else [scenarios]
        self.hold_s = hold_s  # how long the server waits for the meter to close, at most
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.mqtt_port = self.port  # what e2e_support.base_config reads
        self.conns = []
        self.errors = []  # exceptions in scenarios (a scenario bug must fail the test)
        self._stop = False
        self._threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self):
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn = Conn(sock, len(self.conns))
            self.conns.append(conn)
            scenario = self.scenarios[min(conn.index, len(self.scenarios) - 1)]
            t = threading.Thread(target=self._serve, args=(conn, scenario), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn, scenario):
        try:
            scenario(conn)
            conn.until_closed(self.hold_s)
        except Exception as e:  # noqa: BLE001 (reported by the test through .errors)
            if not self._stop:
                self.errors.append((conn.index, repr(e)))
        finally:
            conn.close()

    def wait_conns(self, n, timeout=120):
        """Wait until the meter has opened n connections and closed all of them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.conns) >= n and all(c.closed for c in self.conns[:n]):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        self._stop = True
        try:
            self.listener.close()
        except OSError:
            pass
        for c in list(self.conns):
            c.close()
        for t in self._threads:
            t.join(2)


# --- what a ThingsBoard would do ------------------------------------------------------------------

def connack(conn, rc=0):
    p = conn.expect(0x10)
    if p is None:
        return None
    conn.send(b"\x20\x02\x00" + bytes([rc]))
    return p


def honest(conn, stop=None, timeout=30):
    """Answer like ThingsBoard: CONNACK 0, SUBACK (QoS 1), PUBACK, PINGRESP. After each packet
    stop(conn, first, body) may return True: the scenario takes over from there."""
    while True:
        try:
            p = conn.packet(timeout)
        except TimeoutError:
            return None
        if p is None:
            return None
        first, body = p
        kind = first & 0xF0
        if stop is not None and stop(conn, first, body):
            return p
        if kind == 0x10:
            conn.send(b"\x20\x02\x00\x00")
        elif first == 0x82:
            conn.send(b"\x90\x03" + body[:2] + b"\x01")
        elif kind == 0x30 and first & 0x06:
            n = struct.unpack("!H", body[:2])[0]
            conn.send(b"\x40\x02" + body[2 + n:4 + n])
        elif first == 0xC0:
            conn.send(PINGRESP)
        elif first == 0xE0:
            return None


def is_telemetry(first, body):
    return first & 0xF0 == 0x30 and body[2:2 + struct.unpack("!H", body[:2])[0]] == \
        b"v1/devices/me/telemetry"


def puback_for(body):
    n = struct.unpack("!H", body[:2])[0]
    return b"\x40\x02" + body[2 + n:4 + n]


def provision(conn, reply):
    """A provisioning session that answers `reply` (a dict or bytes) to the request, at QoS 1
    as ThingsBoard does when the SUBSCRIBE matched."""
    if connack(conn) is None:
        return
    while True:
        p = conn.packet()
        if p is None:
            return
        first, body = p
        if first == 0x82:
            conn.send(b"\x90\x03" + body[:2] + b"\x01")
        elif first & 0xF0 == 0x30:
            raw = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            conn.send(publish("/provision/response", raw, 1, 1))
            return
