"""Fakes for the CPython unit tests: the hardware edge (FakeHal) and a client-level umqtt.

FakeUmqtt mimics umqtt.simple's interface in both versions (PyPI 1.3.4: ssl=True plus
ssl_params and `import ussl`; micropython-lib: ssl=<SSLContext>), and FakeBroker scripts what a
ThingsBoard server answers: CONNACK codes, every provisioning reply, refused or ignored
SUBSCRIBEs, missing PUBACKs, dropped connections. It records everything the meter sent.
"""

import errno
import json
import sys


class FakeClock:
    def __init__(self):
        self.us = 1_000_000_000 % (1 << 30)

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
        if broker is not None:
            broker.clock = self.clock
        self.socket = FakeSocketModule(self)
        self.ssl = FakeSslModule()
        self.wifi_up = True  # the access point is reachable
        self.wifi_joined = False
        self.wifi_joins = 0
        self.time_ok = True
        self.epoch0_ms = 1_795_000_000_000
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

    def epoch_ms(self):
        return self.epoch0_ms + self.clock.us // 1000

    def sync_time(self, host):
        return self.time_ok and self.wifi_connected()

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


# --- sockets --------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self, hal):
        self.hal = hal
        self.timeout = None
        self.blocking = True
        self.inbound = bytearray()
        self.written = bytearray()
        self.closed = False
        self.tls = None

    def settimeout(self, t):
        self.timeout = t
        self.blocking = True

    def setblocking(self, flag):
        self.blocking = flag
        if flag:
            self.timeout = None

    def connect(self, addr):
        if not self.hal.wifi_connected():
            raise OSError(errno.EHOSTUNREACH, "no route")
        if self.hal.broker is None or self.hal.broker.down:
            if self.hal.broker is not None:
                self.hal.broker.refused_ms.append(self.hal.broker.now_ms())
            raise OSError(errno.ECONNREFUSED, "refused")

    def read(self, n):
        if not self.inbound:
            if not self.blocking:
                return None
            raise OSError(errno.ETIMEDOUT, "timed out")
        data = bytes(self.inbound[:n])
        del self.inbound[:n]
        return data

    def write(self, buf, n=None):
        data = bytes(buf[:n] if n is not None else buf)
        self.written += data
        return len(data)

    def close(self):
        self.closed = True


class FakeSocketModule:
    def __init__(self, hal):
        self.hal = hal
        self.dns_ok = True
        self.created = []

    def socket(self, *args):
        s = FakeSocket(self.hal)
        self.created.append(s)
        return s

    def getaddrinfo(self, host, port, *args):
        if not self.dns_ok or not self.hal.wifi_connected():
            raise OSError(-2, "DNS failure")
        return [(2, 1, 0, "", (host, port))]


class FakeContext:
    def __init__(self):
        self.verify_mode = None
        self.cadata = None
        self.wrapped = []
        self.fail = None  # an exception to raise in the handshake (wrong CA, host name)
        self.loaded = []  # every certificate given, in order

    def load_verify_locations(self, cadata=None):
        self.cadata = cadata
        self.loaded.append(cadata)

    def wrap_socket(self, sock, server_hostname=None):
        if self.fail is not None:
            raise self.fail
        sock.tls = server_hostname
        self.wrapped.append(server_hostname)
        return sock


class FakeSslModule:
    PROTOCOL_TLS_CLIENT = 2
    CERT_REQUIRED = 2

    def __init__(self):
        self.contexts = []

    def SSLContext(self, proto):
        ctx = FakeContext()
        self.contexts.append(ctx)
        return ctx


# --- the broker ------------------------------------------------------------------------------


class FakeBroker:
    """Scripts a ThingsBoard server, as seen through umqtt.simple."""

    def __init__(self, clock=None, key="prov-key-abc123", secret="prov-secret-xyz789"):
        self.clock = clock  # set by FakeHal so records carry the meter's time
        self.key, self.secret = key, secret  # the device profile, for TB-like provisioning
        self.down = False
        self.devices = {}  # name -> token (what the platform holds)
        self.issued = 0
        self.attributes = {}  # name -> list of attribute dicts received
        self.tokens = {}  # token -> device name
        self.basic = {}  # (clientId, userName, password) -> device name
        self.connect_script = []  # next CONNACK codes (int) or exceptions, consumed first
        self.provision_script = []  # replies: dict, bytes, None (no reply), "close"
        self.provision_suback = "grant"  # or "refuse", "ignore"
        self.puback = {}  # topic -> "drop" (no PUBACK: timeout) or "close"
        self.close_batches_over = None  # close on a telemetry array longer than this (rate limit)
        self.close_on_subscribe = 0  # the next N normal sessions are closed when they subscribe
        self.close_after_connect = 0  # the next N normal sessions are closed right after CONNACK 0
        self.sessions = []
        self.published = []  # (client_id, user, topic, payload, qos)
        self.publish_ms = []  # when each of them arrived
        self.provision_requests = []  # parsed request dicts
        self.connects = []  # (client_id, user, rc, ms)
        self.refused_ms = []  # TCP connection attempts while the server was down

    # decisions -------------------------------------------------------------------------------
    def on_connect(self, client):
        cid, user = client.client_id.decode(), (client.user or b"").decode()
        if self.connect_script:
            r = self.connect_script.pop(0)
            if isinstance(r, Exception):
                self.connects.append((cid, user, r, self.now_ms()))
                raise r
            rc = r
        elif user == "provision" or cid == "provision":
            rc = 0
        elif user in self.tokens:
            rc = 0
        elif (cid, user, (client.pswd or b"").decode()) in self.basic:
            rc = 0
        elif not user and client.pswd in (None, b""):
            rc = 2
        else:
            rc = 5
        self.connects.append((cid, user, rc, self.now_ms()))
        return rc

    def on_publish(self, client, topic, msg, qos):
        t = topic.decode()
        self.published.append((client.client_id.decode(), (client.user or b"").decode(), t,
                               bytes(msg), qos))
        self.publish_ms.append(self.now_ms())
        if client.provision:
            if t != "/provision/request":
                raise OSError(errno.ECONNRESET, "closed by server")
            req = json.loads(msg)
            self.provision_requests.append(req)
            reply = self.provision_script.pop(0) if self.provision_script else self.decide(req)
            if reply == "close":
                client._raw().peer_closed = True
                return
            if reply is not None:
                body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                client.pending.append((b"/provision/response", body))
            return
        if t == "v1/devices/me/attributes":
            self.attributes.setdefault(self.tokens.get((client.user or b"").decode()), []).append(
                json.loads(msg))
        if self.close_batches_over is not None and t == "v1/devices/me/telemetry":
            body = json.loads(bytes(msg))
            if isinstance(body, list) and len(body) > self.close_batches_over:
                self.published.pop()
                self.publish_ms.pop()
                raise OSError(errno.ECONNRESET, "closed by server (rate limit)")
        action = self.puback.get(t)
        if qos and action == "drop":
            raise OSError(errno.ETIMEDOUT, "no PUBACK")
        if action == "close":
            raise OSError(errno.ECONNRESET, "closed by server")

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


class FakeUmqtt:
    """A module-like object: MQTTClient, MQTTException and the `socket` global Link replaces."""

    def __init__(self, broker, new_api=True):
        self.broker = broker
        self.new_api = new_api
        self.socket = None
        mod = self

        class MQTTException(Exception):
            pass

        self.MQTTException = MQTTException

        class _Base:
            def _setup(self, client_id, server, port, user, password, keepalive):
                self.client_id = client_id
                self.server = server
                self.port = port or 1883
                self.user = user
                self.pswd = password
                self.keepalive = keepalive
                self.sock = None
                self.pid = 0
                self.cb = None
                self.pending = []  # (topic, payload) the server will send
                self.provision = False
                self.subscribed = []

            def set_callback(self, f):
                self.cb = f

            def connect(self, clean_session=True):
                self.sock = mod.socket.socket()
                addr = mod.socket.getaddrinfo(self.server, self.port)[0][-1]
                self.sock.connect(addr)
                if self._ssl():
                    self.sock = self._wrap(self.sock)
                rc = mod.broker.on_connect(self)
                if rc != 0:
                    raise MQTTException(rc)
                self.provision = self.client_id == b"provision" or self.user == b"provision"
                mod.broker.sessions.append(self)
                if not self.provision and mod.broker.close_after_connect:
                    mod.broker.close_after_connect -= 1
                    self._raw().peer_closed = True
                return 0

            def disconnect(self):
                self.sock.write(b"\xe0\0")
                self.sock.close()

            def ping(self):
                self.sock.write(b"\xc0\0")

            def publish(self, topic, msg, retain=False, qos=0):
                self._check_open()
                self.sock.write(b"\x30")
                mod.broker.on_publish(self, topic, msg, qos)
                if qos == 1:
                    # umqtt's QoS 1 publish loops on wait_msg() until the PUBACK: whatever the
                    # server sent meanwhile is dispatched to the callback first.
                    while self.pending:
                        t, p = self.pending.pop(0)
                        self.cb(t, p)

            def subscribe(self, topic, qos=0):
                self._check_open()
                if not self.provision and mod.broker.close_on_subscribe:
                    mod.broker.close_on_subscribe -= 1
                    self._raw().peer_closed = True
                    raise OSError(-1)  # umqtt reading the SUBACK from a closed socket
                self.subscribed.append(topic)
                if self.provision:
                    mode = mod.broker.provision_suback
                    if mode == "refuse":
                        raise MQTTException(0x80)
                    if mode == "ignore":
                        raise OSError(errno.ETIMEDOUT, "no SUBACK")

            def _check_open(self):
                if getattr(self.sock, "peer_closed", False) or getattr(self.sock, "_s", None) \
                        and getattr(self.sock._s, "peer_closed", False):
                    raise OSError(errno.ECONNRESET, "closed")

            def _raw(self):
                s = self.sock
                return getattr(s, "_s", s)

            def _incoming_subscribe(self):
                # Link.subscribe_nowait wrote a SUBSCRIBE: answer it as the server would.
                raw = self._raw()
                data = bytes(raw.written)
                i = data.find(b"\x82")
                if i < 0 or getattr(raw, "sub_seen", False):
                    return
                raw.sub_seen = True
                pid = data[i + 2:i + 4]
                topic_len = int.from_bytes(data[i + 4:i + 6], "big")
                self.subscribed.append(data[i + 6:i + 6 + topic_len])
                mode = mod.broker.provision_suback if self.provision else "grant"
                if mode != "ignore":
                    raw.inbound += b"\x90\x03" + pid + (b"\x80" if mode == "refuse" else b"\x01")

            def wait_msg(self):
                self._incoming_subscribe()
                raw = self._raw()
                if getattr(raw, "peer_closed", False):
                    raise OSError(-1)
                if raw.inbound:
                    op = raw.inbound[0]
                    del raw.inbound[:1]
                    return op
                if self.pending:
                    topic, payload = self.pending.pop(0)
                    self.cb(topic, payload)
                    return 0x30 if mod.new_api else None
                if not raw.blocking:
                    self.sock.setblocking(True)
                    return None
                raise OSError(errno.ETIMEDOUT, "timed out")

            def check_msg(self):
                self.sock.setblocking(False)
                return self.wait_msg()

        if new_api:
            class MQTTClient(_Base):
                def __init__(self, client_id, server, port=0, user=None, password=None,
                             keepalive=0, ssl=None):
                    self._setup(client_id, server, port, user, password, keepalive)
                    self.ssl = ssl

                def _ssl(self):
                    return bool(self.ssl)

                def _wrap(self, sock):
                    return self.ssl.wrap_socket(sock, server_hostname=self.server)
        else:
            class MQTTClient(_Base):
                def __init__(self, client_id, server, port=0, user=None, password=None,
                             keepalive=0, ssl=False, ssl_params={}):
                    self._setup(client_id, server, port, user, password, keepalive)
                    self.ssl = ssl
                    self.ssl_params = ssl_params

                def _ssl(self):
                    return self.ssl

                def _wrap(self, sock):
                    import ussl  # as umqtt.simple 1.3.4 does
                    return ussl.wrap_socket(sock, **self.ssl_params)

        self.MQTTClient = MQTTClient


def drop_ussl():
    sys.modules.pop("ussl", None)
