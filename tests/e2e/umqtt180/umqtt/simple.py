# A stand-in for micropython-lib's umqtt.simple 1.8.0, the version frozen into the ESP32 image
# the meter runs (docs/esp32.md, "umqtt.simple on the board"). PyPI stops at 1.3.4, so the real
# 1.8.0 cannot be fetched like the 1.3.4 the tests install; this module is written from its
# source (micropython/micropython-lib : micropython/umqtt.simple/umqtt/simple.py, manifest
# version 1.8.0) to behave the same, warts included:
#   - the constructor takes ssl=None and ssl_params={}; ssl=True means "legacy": connect()
#     imports micropython-lib's `ssl` and calls ssl.wrap_socket(sock, **ssl_params), whose
#     default is cert_reqs=CERT_NONE (nothing verified); any other true value is used as a
#     context: ssl.wrap_socket(sock, server_hostname=server);
#   - connect(clean_session=True, timeout=None) calls sock.settimeout(timeout) on the socket it
#     creates, so by default the TCP connect, the TLS handshake and the CONNACK block forever;
#   - a username is sent only when it is truthy (1.3.4: whenever it is not None);
#   - the CONNACK is checked with assert, which `mpy-cross -O1` and above remove.
# Only what the firmware calls is here: the constructor, connect(), disconnect() and ping()
# (firmware/link.py reads every packet after the CONNACK itself). publish(), subscribe() and
# wait_msg() are left out on purpose, so firmware that starts calling them fails loudly in
# the tests instead of passing against a guess; docs/esp32.md lists how 1.8.0's differ.
# Used by both suites: tests/unit/fakes.py loads it on CPython, and the end-to-end tests put it
# first on the Unix port's MICROPYPATH (tests/e2e/test_e2e_umqtt180.py). Test code only: the
# firmware never ships it.

import socket
import struct


class MQTTException(Exception):
    pass


def _put_length(buf, n):
    # MQTT remaining length, 7 bits a byte, from buf[1]; returns the index of the last byte.
    i = 1
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params={}):
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = client_id
        self.sock = None
        self.server = server
        self.port = port
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.pid = 0
        self.cb = None
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False

    def _send_str(self, s):
        self.sock.write(struct.pack("!H", len(s)))
        self.sock.write(s)

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        assert 0 <= qos <= 2
        assert topic
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def connect(self, clean_session=True, timeout=None):
        if self.sock:
            self.sock.close()
        self.sock = socket.socket()
        self.sock.settimeout(timeout)  # None: blocking forever (the wart, docs/esp32.md)
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        self.sock.connect(addr)
        if self.ssl is True:
            import ssl  # micropython-lib's: wrap_socket() defaults to CERT_NONE
            self.sock = ssl.wrap_socket(self.sock, **self.ssl_params)
        elif self.ssl:
            self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
        head = bytearray(b"\x10\0\0\0\0\0")
        var = bytearray(b"\x04MQTT\x04\x02\0\0")
        size = 10 + 2 + len(self.client_id)
        var[6] = clean_session << 1
        if self.user:
            size += 2 + len(self.user) + 2 + len(self.pswd)
            var[6] |= 0xC0
        if self.keepalive:
            assert self.keepalive < 65536
            var[7] |= self.keepalive >> 8
            var[8] |= self.keepalive & 0x00FF
        if self.lw_topic:
            size += 2 + len(self.lw_topic) + 2 + len(self.lw_msg)
            var[6] |= 0x4 | (self.lw_qos & 0x1) << 3 | (self.lw_qos & 0x2) << 3
            var[6] |= self.lw_retain << 5
        i = _put_length(head, size)
        self.sock.write(head, i + 2)
        self.sock.write(var)
        self._send_str(self.client_id)
        if self.lw_topic:
            self._send_str(self.lw_topic)
            self._send_str(self.lw_msg)
        if self.user:
            self._send_str(self.user)
            self._send_str(self.pswd)
        resp = self.sock.read(4)
        assert resp[0] == 0x20 and resp[1] == 0x02
        if resp[3] != 0:
            raise MQTTException(resp[3])
        return resp[2] & 1

    def disconnect(self):
        self.sock.write(b"\xe0\0")
        self.sock.close()

    def ping(self):
        self.sock.write(b"\xc0\0")
