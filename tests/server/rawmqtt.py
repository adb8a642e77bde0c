"""A tiny MQTT client that speaks raw bytes, for tests where the exact packets matter.

It deliberately does nothing on its own (no automatic PUBACK, no keepalive) so a test sees and
controls every byte.
"""
import socket
import ssl
import struct
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id="", username=None, password=None, clean=True, keepalive=60, level=4,
                   name="MQTT", properties=b""):
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = s(name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        body += varint(len(properties)) + properties
    body += s(client_id)
    if username is not None:
        body += s(username)
    if password is not None:
        body += s(password)
    return packet(0x10, body)


def publish_packet(topic, payload, qos=0, packet_id=1, level=4, retain=False):
    if isinstance(payload, str):
        payload = payload.encode()
    body = s(topic) + (struct.pack("!H", packet_id) if qos else b"") + (b"\x00" if level == 5 else b"") + payload
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body)


def subscribe_packet(packet_id, filters, level=4):
    body = struct.pack("!H", packet_id) + (b"\x00" if level == 5 else b"")
    for topic, qos in filters:
        body += s(topic) + bytes([qos])
    return packet(0x82, body)


def unsubscribe_packet(packet_id, topics, level=4):
    body = struct.pack("!H", packet_id) + (b"\x00" if level == 5 else b"")
    for topic in topics:
        body += s(topic)
    return packet(0xA2, body)


def puback_packet(packet_id):
    return packet(0x40, struct.pack("!H", packet_id))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class Closed(Exception):
    pass


class RawClient:
    def __init__(self, port, host="127.0.0.1", tls_context=None, server_hostname="localhost", timeout=5):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:
            sock = tls_context.wrap_socket(sock, server_hostname=server_hostname)
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data") from None
        except (ConnectionResetError, ssl.SSLError, OSError) as e:
            raise Closed(str(e)) from None
        if not chunk:
            raise Closed("EOF")
        self.buf += chunk

    def read_packet(self, timeout=5.0):
        """(first_byte, body) of the next packet; Closed at EOF, TimeoutError when nothing comes."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                length, shift, i = 0, 0, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + length:
                    first, body = self.buf[0], self.buf[i:i + length]
                    self.buf = self.buf[i + length:]
                    return first, body
            self._fill(deadline)

    def expect_closed(self, timeout=5.0):
        """True when the server closes the connection (EOF/reset) without sending anything more."""
        try:
            first, body = self.read_packet(timeout)
        except Closed:
            return True
        raise AssertionError(f"expected close, got packet {first:#x} {body!r}")

    def expect_silence(self, timeout=0.5):
        try:
            first, body = self.read_packet(timeout)
        except TimeoutError:
            return True
        raise AssertionError(f"expected nothing, got packet {first:#x} {body!r}")

    def connect(self, client_id="", username=None, password=None, **kw):
        self.send(connect_packet(client_id, username, password, **kw))
        return self.read_packet()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_publish(first, body, level=4):
    """(topic, qos, packet_id, payload) of a server PUBLISH."""
    qos = (first >> 1) & 3
    n = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + n].decode()
    pos = 2 + n
    packet_id = None
    if qos:
        packet_id = struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
    if level == 5:
        plen = body[pos]
        pos += 1 + plen
    return topic, qos, packet_id, body[pos:]
