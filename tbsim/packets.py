"""MQTT 3.1 / 3.1.1 / 5.0 packet framing, decoding and encoding (the wire layer of tbsim).

Written here rather than taken from a broker library because ThingsBoard's transport answers in ways a
generic broker never does (CONNACK codes chosen from the credentials shape, PUBACK only after the data
was accepted, a bare TCP close instead of a reply, ...): see README.md "Why our own MQTT layer".

Decoding mirrors what Netty's MqttDecoder (which ThingsBoard uses) accepts and rejects, because a
decode failure in ThingsBoard means "connection closed" (docs/thingsboard.md §7):
  * remaining length > max_payload_size (65536): close without reading the body;
  * a remaining length that needs a fifth byte: close;
  * reserved or unknown packet type, QoS 3, SUBSCRIBE/UNSUBSCRIBE/PUBREL without the 0b0010 flags: close;
  * CONNECT with an unknown protocol name/level or a set reserved flag: close (no CONNACK);
  * leftover bytes after a CONNECT's last field: close.
"""
import struct

MAX_PACKET = 65536          # TB transport.mqtt.netty.max_payload_size, checked on the remaining length

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

V31, V311, V5 = 3, 4, 5

# MQTT 5 property id -> wire type, the set Netty knows; anything else is a decode failure.
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROPS = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT, 0x11: _U32,
    0x12: _STR, 0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE,
    0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _U32, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}


class MalformedPacket(Exception):
    """The bytes cannot be an MQTT packet; ThingsBoard closes the connection."""


class PacketTooLarge(MalformedPacket):
    """Remaining length above max_payload_size; the body is never read."""


class _Cursor:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data, start=0, end=None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def left(self):
        return self.end - self.pos

    def take(self, n):
        if n < 0 or self.pos + n > self.end:
            raise MalformedPacket("truncated packet")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(chunk)

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def varint(self):
        value, shift = 0, 0
        for _ in range(4):
            b = self.u8()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise MalformedPacket("variable byte integer longer than 4 bytes")

    def binary(self):
        return self.take(self.u16())

    def string(self):
        # Netty decodes with a replacing UTF-8 decoder, so invalid bytes do not fail the packet.
        return self.binary().decode("utf-8", "replace")

    def properties(self):
        length = self.varint()
        if length > self.left():
            raise MalformedPacket("properties longer than packet")
        props = {}
        sub = _Cursor(self.data, self.pos, self.pos + length)
        while sub.left():
            pid = sub.varint()
            kind = _PROPS.get(pid)
            if kind is None:
                raise MalformedPacket(f"unknown property id {pid:#x}")
            if kind == _BYTE:
                value = sub.u8()
            elif kind == _U16:
                value = sub.u16()
            elif kind == _U32:
                value = sub.u32()
            elif kind == _VARINT:
                value = sub.varint()
            elif kind == _STR:
                value = sub.string()
            elif kind == _BIN:
                value = sub.binary()
            else:
                value = (sub.string(), sub.string())
            props.setdefault(pid, []).append(value)
        self.pos += length
        return props


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first_byte, body):
    return bytes([first_byte]) + encode_varint(len(body)) + body


def _str(s):
    raw = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(raw)) + raw


async def read_packet(reader, max_remaining=MAX_PACKET):
    """Read one packet from an asyncio StreamReader: (type, flags, body bytes).

    Raises asyncio.IncompleteReadError at EOF, MalformedPacket/PacketTooLarge on bad framing. The body
    is only read (and allocated) once the declared length is known to be within max_remaining, so a
    lying header cannot make us allocate what it claims.
    """
    first = (await reader.readexactly(1))[0]
    remaining, shift = 0, 0
    for i in range(4):
        b = (await reader.readexactly(1))[0]
        remaining |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    else:
        raise MalformedPacket("remaining length longer than 4 bytes")
    if remaining > max_remaining:
        raise PacketTooLarge(f"remaining length {remaining} > {max_remaining}")
    ptype, flags = first >> 4, first & 0x0F
    if ptype == 0:
        raise MalformedPacket("reserved packet type 0")
    if ptype in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) and flags != 0b0010:
        raise MalformedPacket(f"packet type {ptype} must have flags 0b0010")
    if ptype == PUBLISH and (flags >> 1) & 3 == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    body = await reader.readexactly(remaining) if remaining else b""
    return ptype, flags, body


class Connect:
    __slots__ = ("version", "clean", "keepalive", "client_id", "username", "password",
                 "will_topic", "will_payload", "properties")

    def __repr__(self):
        return f"Connect(v={self.version}, client_id={self.client_id!r}, user={'set' if self.username is not None else None})"


def parse_connect(body):
    c = _Cursor(body)
    name = c.string()
    level = c.u8()
    if (name, level) not in (("MQTT", V311), ("MQTT", V5), ("MQIsdp", V31)):
        raise MalformedPacket(f"unacceptable protocol {name!r} level {level}")
    flags = c.u8()
    if level != V31 and flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag set")
    msg = Connect()
    msg.version = level
    msg.clean = bool(flags & 0x02)
    msg.keepalive = c.u16()
    msg.properties = c.properties() if level == V5 else {}
    msg.client_id = c.string()
    if level == V31 and not 1 <= len(msg.client_id) <= 23:
        # Netty's isValidClientId for 3.1: identifier rejected is a decode failure there, so: close.
        raise MalformedPacket("MQTT 3.1 client id must be 1..23 characters")
    msg.will_topic = msg.will_payload = None
    if flags & 0x04:
        if level == V5:
            c.properties()
        msg.will_topic = c.string()
        msg.will_payload = c.binary()
    msg.username = c.string() if flags & 0x80 else None
    msg.password = c.binary() if flags & 0x40 else None
    if c.left():
        raise MalformedPacket("bytes left after CONNECT payload")
    return msg


class Publish:
    __slots__ = ("topic", "qos", "retain", "dup", "packet_id", "payload", "properties")


def parse_publish(flags, body, version):
    c = _Cursor(body)
    msg = Publish()
    msg.qos = (flags >> 1) & 3
    msg.retain = bool(flags & 1)
    msg.dup = bool(flags & 8)
    msg.topic = c.string()
    # Netty reports packet id -1 for QoS 0; ThingsBoard's ack() only answers ids > 0.
    msg.packet_id = c.u16() if msg.qos else -1
    msg.properties = c.properties() if version == V5 else {}
    msg.payload = c.take(c.left())
    return msg


def parse_subscribe(body, version):
    c = _Cursor(body)
    packet_id = c.u16()
    if version == V5:
        c.properties()
    filters = []
    while c.left():
        topic = c.string()
        options = c.u8()
        filters.append((topic, options & 3))
    return packet_id, filters


def parse_unsubscribe(body, version):
    c = _Cursor(body)
    packet_id = c.u16()
    if version == V5:
        c.properties()
    topics = []
    while c.left():
        topics.append(c.string())
    return packet_id, topics


def parse_packet_id(body):
    return _Cursor(body).u16()


# ---- encoders (server -> client) -------------------------------------------------------------------

def connack(code, session_present=False, version=V311):
    body = bytes([1 if session_present else 0, code])
    if version == V5:
        body += b"\x00"                    # no properties: TB's ConnAckBuilder sets none
    return _packet(CONNACK << 4, body)


def puback(packet_id, version=V311, reason=0):
    # Netty writes the v5 reason code (and an empty property length) only when it is not 0 (success).
    body = struct.pack("!H", packet_id)
    if version == V5 and reason:
        body += bytes([reason, 0])
    return _packet(PUBACK << 4, body)


def suback(packet_id, codes, version=V311):
    body = struct.pack("!H", packet_id) + (b"\x00" if version == V5 else b"") + bytes(codes)
    return _packet(SUBACK << 4, body)


def unsuback(packet_id, codes, version=V311):
    # 3.1.1 UNSUBACK has no payload; v5 carries one reason code per filter.
    body = struct.pack("!H", packet_id)
    if version == V5:
        body += b"\x00" + bytes(codes)
    return _packet(UNSUBACK << 4, body)


def publish(topic, payload, qos=0, packet_id=None, version=V311, retain=False):
    body = _str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += b"\x00"
    body += payload
    return _packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body)


def pingresp():
    return bytes([PINGRESP << 4, 0])


def disconnect(version=V5, reason=0):
    if version == V5 and reason:
        return _packet(DISCONNECT << 4, bytes([reason, 0]))
    return bytes([DISCONNECT << 4, 0])
