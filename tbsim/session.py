"""One MQTT connection, handled as ThingsBoard's MqttTransportHandler handles it.

Section numbers refer to docs/thingsboard.md. The read loop processes one packet at a time, so
packets that arrive while a CONNECT is still being authorised wait, as TB's per-session queue makes
them wait. A PUBACK means "accepted by the rule-engine queue": keys are validated later, when the
data is saved, so a message with an invalid key still gets its PUBACK and is then dropped (KvUtils).
tbsim saves before it writes the PUBACK, so a client that has read the PUBACK of a valid message
finds the data stored.
"""
import asyncio
import logging
import time

from . import ota
from . import packets as P
from . import tbjson, topics
from .provisioning import ParseFailure, parse_request
from .ratelimits import session_limits_payload
from .store import Profile, mask

log = logging.getLogger("tbsim")

# MQTT 5 reason codes TB uses (MqttReasonCodes).
RC_NORMAL = 0x00
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPLEMENTATION_ERROR = 0x83
RC_CLIENT_ID_INVALID = 0x85
RC_BAD_USER_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_NO_SUBSCRIPTION = 0x11
RC_QUOTA_EXCEEDED = 0x97
RC_MESSAGE_RATE_TOO_HIGH = 0x96
RC_ADMINISTRATIVE_ACTION = 0x98
RC_PAYLOAD_FORMAT_INVALID = 0x99
RC_CONNECTION_RATE_EXCEEDED = 0x9F
RC_MAXIMUM_CONNECT_TIME = 0xA0

PRE_CONNECT_QUEUE_LIMIT = 100       # transport.mqtt.msg_queue_size_per_device_limit
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024
AWAITING_ACK_LIMIT = 100


def _v3_code(v5_code):
    """ReturnCodeResolver for MQTT 3.1/3.1.1 CONNACK (§1): 4 is never sent."""
    return {0: 0, RC_CLIENT_ID_INVALID: 2, RC_SERVER_UNAVAILABLE: 3, RC_CONNECTION_RATE_EXCEEDED: 3}.get(v5_code, 5)


class Session:
    def __init__(self, sim, reader, writer, tls):
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else None
        self.version = None                 # protocol level once CONNECT was read
        self.kind = None                    # None before CONNECT, then "provision" or "device"
        self.device_name = None
        self.client_id = None
        self.subscriptions = {}             # filter -> granted QoS (mqttQoSMap)
        self.attr_type = None               # TopicType of the attribute subscription, None if none
        self.rpc_type = None                # TopicType of the RPC subscription
        self.attr_request_type = topics.V1
        self.client_rpc_type = topics.V1
        self._packet_id = 0
        self.awaiting_ack = {}              # packet id -> callable run when the device's PUBACK arrives
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.closed = False
        self.pre_connect_packets = 0
        self._timers = []
        self.ota_chunk_sizes = {}           # requestId -> chunk size (MqttTransportHandler.chunkSizes)
        self.ota_packages = {}              # requestId -> package, fixed by its first request (otaPackSessions)

    # ---- output ----
    def write(self, data):
        if self.closed:
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            # A reader that never reads must not make us buffer without bound.
            self.close("slow-consumer", abort=True)
            return
        self.writer.write(data)

    def next_packet_id(self):
        # DeviceSessionCtx.nextMsgId: per-session counter starting at 1.
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    def qos_for(self, topic):
        """MqttDeviceAwareSessionContext.getQoSForTopic: granted QoS of a matching filter, else 1."""
        for topic_filter, qos in self.subscriptions.items():
            if topics.matches(topic_filter, topic):
                return qos
        return 1

    def send_publish(self, topic, payload, on_ack=None):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        qos = self.qos_for(topic)
        packet_id = None
        if qos:
            packet_id = self.next_packet_id()
            if on_ack is not None:
                if len(self.awaiting_ack) >= AWAITING_ACK_LIMIT:
                    self.awaiting_ack.pop(next(iter(self.awaiting_ack)))
                self.awaiting_ack[packet_id] = on_ack
        self.write(P.publish(topic, payload, qos, packet_id, self.version))
        return qos

    def ack(self, packet_id, reason=0):
        # TB's ack(): only for packet ids > 0, i.e. QoS 1 and (TB quirk) QoS 2 publishes.
        if packet_id > 0:
            self.write(P.puback(packet_id, self.version, reason))

    # ---- lifecycle ----
    def activity(self):
        self.last_activity = time.monotonic()

    def close(self, reason, v5_reason=None, abort=False):
        """Close like TB's closeCtx: MQTT 5 gets DISCONNECT with a reason first, 3.1.x a bare TCP close."""
        if self.closed:
            return
        if self.version == P.V5 and v5_reason is not None and not abort:
            self.write(P.disconnect(P.V5, v5_reason))
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        transport = self.writer.transport
        if abort:
            transport.abort()
        else:
            self.writer.close()
            # A peer that never reads could keep a graceful close pending forever.
            asyncio.get_running_loop().call_later(5.0, transport.abort)
        self.awaiting_ack.clear()
        self.sim._session_closed(self, reason)

    def check_timers(self, now):
        if self.closed:
            return
        if self.kind is None:
            if now - self.opened > self.sim.connect_timeout_s:
                self.close("connect-timeout")
        elif now - self.last_activity > self.sim.inactivity_timeout_s:
            # transport.sessions.inactivity_timeout (§9); TB ignores the client's keepalive.
            self.close("inactivity", RC_MAXIMUM_CONNECT_TIME)

    async def run(self):
        reason = "connection-lost"
        try:
            while not self.closed:
                ptype, flags, body = await P.read_packet(self.reader)
                await self.dispatch(ptype, flags, body)
            return
        except asyncio.IncompleteReadError:
            reason = "connection-lost"
        except P.PacketTooLarge as e:
            log.info("closing %s: %s", self.peer, e)
            self.close("packet-too-large", RC_MALFORMED)
        except P.MalformedPacket as e:
            log.info("closing %s: malformed packet: %s", self.peer, e)
            self.close("protocol-error", RC_MALFORMED)
        except (ConnectionError, OSError):
            reason = "connection-lost"
        except asyncio.CancelledError:
            self.close("server-stop", abort=True)
            raise
        except Exception:                                     # a bug here must not kill the server
            log.exception("internal error on %s", self.peer)
            self.close("internal-error", RC_IMPLEMENTATION_ERROR)
        self.close(reason)

    async def dispatch(self, ptype, flags, body):
        if ptype == P.CONNECT:
            if self.kind is not None:
                # TB would authenticate again; the spec calls a second CONNECT a protocol violation.
                self.close("protocol-error", RC_PROTOCOL_ERROR)
                return
            await self.on_connect(P.parse_connect(body))
        elif self.kind is None:
            # TB queues packets until the session is connected and closes at 100 queued (§1).
            self.pre_connect_packets += 1
            if self.pre_connect_packets >= PRE_CONNECT_QUEUE_LIMIT:
                self.close("queue-overflow", RC_QUOTA_EXCEEDED)
        elif self.kind == "provision":
            await self.on_provision_packet(ptype, flags, body)
        else:
            await self.on_device_packet(ptype, flags, body)

    # ---- CONNECT (§1) ----
    async def on_connect(self, msg):
        sim = self.sim
        self.version = msg.version
        self.client_id = msg.client_id
        username = msg.username
        password = msg.password.decode("utf-8", "replace") if msg.password is not None else None
        base = {"clientId": msg.client_id, "username": mask(username) if username != "provision" else username,
                "tls": self.tls, "peer": self.peer, "protocolLevel": msg.version, "keepalive": msg.keepalive}
        if username == "provision" or msg.client_id == "provision":
            # Provisioning check comes first; password and token are ignored.
            self.kind = "provision"
            self.activity()
            sim.store.event("connect", session="provision", device=None, returnCode=0, **base)
            await self._connack(0, msg)
            return
        device = sim.store.authenticate(msg.client_id, username, password)
        if device is None:
            if (username is not None and password is not None) or ((username is None) != (password is None)):
                code = RC_BAD_USER_OR_PASSWORD
            elif msg.client_id.strip():
                code = RC_CLIENT_ID_INVALID
            else:
                code = RC_NOT_AUTHORIZED
            wire = code if self.version == P.V5 else _v3_code(code)
            sim.store.event("connect", session="device", device=None, returnCode=wire, **base)
            log.info("CONNECT refused (%s) for client id %r user %s", wire, msg.client_id, mask(username))
            await self._connack(code, msg)
            self.close("auth-failed", code)
            return
        # The session-open event is a rate-limited "message" (§7): exceeded -> CONNACK 3.
        if not sim._check_limits(device.name, 0):
            wire = RC_CONNECTION_RATE_EXCEEDED if self.version == P.V5 else 3
            sim.store.event("connect", session="device", device=device.name, returnCode=wire, **base)
            await self._connack(RC_CONNECTION_RATE_EXCEEDED, msg)
            self.close("rate-limit", RC_MESSAGE_RATE_TOO_HIGH)
            return
        self.kind = "device"
        self.device_name = device.name
        self.activity()
        # max_concurrent_sessions_per_device = 1: the new session wins, the older one is closed (§9).
        for old in sim._sessions_of(device.name):
            old.close("taken-over", RC_SESSION_TAKEN_OVER)
        sim._register(self)
        sim.store.event("connect", session="device", device=device.name, returnCode=0, **base)
        await self._connack(0, msg)

    async def _connack(self, code, msg):
        if self.sim.connack_delay_s:
            await asyncio.sleep(self.sim.connack_delay_s)
        if self.closed:
            return
        wire = code if self.version == P.V5 else _v3_code(code)
        # Session-present echoes "not cleanSession"; there is no real persistent session.
        self.write(P.connack(wire, not msg.clean, self.version))

    # ---- provisioning session (§2) ----
    async def on_provision_packet(self, ptype, flags, body):
        if ptype == P.PUBLISH:
            msg = P.parse_publish(flags, body, self.version)
            await self.on_provision_publish(msg)
        elif ptype == P.SUBSCRIBE:
            packet_id, filters = P.parse_subscribe(body, self.version)
            mode = self.sim.provision_subscribe
            if mode == "ignore":
                return                       # <= v3.4: no SUBACK at all (§2.7)
            codes = []
            for topic_filter, qos in filters:
                if mode == "grant" and topic_filter == topics.PROVISION_RESPONSE:
                    granted = min(qos, 1)
                    self.subscriptions[topic_filter] = granted
                    codes.append(granted)
                else:
                    codes.append(RC_TOPIC_FILTER_INVALID if self.version == P.V5 and mode == "grant" else 0x80)
            self.write(P.suback(packet_id, codes, self.version))
        elif ptype == P.UNSUBSCRIBE:
            packet_id, filters = P.parse_unsubscribe(body, self.version)
            codes = []
            for topic_filter in filters:
                if topic_filter in self.subscriptions:
                    del self.subscriptions[topic_filter]
                    codes.append(0 if topics.matches(topic_filter, topics.PROVISION_RESPONSE) else RC_TOPIC_FILTER_INVALID)
                else:
                    codes.append(RC_NO_SUBSCRIPTION)
            self.write(P.unsuback(packet_id, codes, self.version))
        elif ptype == P.PINGREQ:
            self.write(P.pingresp())
        elif ptype == P.DISCONNECT:
            self.close("client-disconnect", RC_NORMAL)
        # Anything else is ignored in a provision session.

    async def on_provision_publish(self, msg):
        store = self.sim.store
        self.activity()
        if msg.topic != topics.PROVISION_REQUEST:
            # Only /provision/request is served; anything else: PUBACK (QoS>=1) then close, no reply.
            store.event("publish", device=None, topic=msg.topic, qos=msg.qos, accepted=False,
                        reason="provision-topic", size=len(msg.payload))
            self.ack(msg.packet_id, RC_TOPIC_NAME_INVALID)
            self.close("provision-topic", RC_TOPIC_NAME_INVALID)
            return
        try:
            req = parse_request(msg.payload)
        except ParseFailure as e:
            store.event("provision", request=None, status=None, deviceName=None, error=str(e), transport="mqtt")
            if e.puback:
                self.ack(msg.packet_id, RC_IMPLEMENTATION_ERROR)
                self.close("provision-malformed", RC_IMPLEMENTATION_ERROR)
            elif self.version == P.V5 and msg.packet_id > 0:
                # Provision sessions have no profile, so only MQTT 5 gets a PUBACK(0x99) and stays.
                self.ack(msg.packet_id, RC_PAYLOAD_FORMAT_INVALID)
            else:
                self.close("provision-malformed", RC_PAYLOAD_FORMAT_INVALID)
            return
        if self.sim.provision_delay_s:
            await asyncio.sleep(self.sim.provision_delay_s)
            if self.closed:
                return
        _status, reply, _name = self.sim._provision(req, "mqtt")
        # PUBACK first, then the reply on this very connection only, then close 60 s later (§2.6).
        self.ack(msg.packet_id)
        self.send_publish(topics.PROVISION_RESPONSE, reply)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.sim.provision_close_s, self.close, "provision-timeout"))

    # ---- device session ----
    async def on_device_packet(self, ptype, flags, body):
        if ptype == P.PUBLISH:
            await self.on_device_publish(P.parse_publish(flags, body, self.version))
        elif ptype == P.SUBSCRIBE:
            self.on_subscribe(*P.parse_subscribe(body, self.version))
        elif ptype == P.UNSUBSCRIBE:
            self.on_unsubscribe(*P.parse_unsubscribe(body, self.version))
        elif ptype == P.PINGREQ:
            self.write(P.pingresp())
            self.activity()                  # PINGREQ counts as activity (§9)
            self.sim.store.event("ping", device=self.device_name)
        elif ptype == P.DISCONNECT:
            self.close("client-disconnect", RC_NORMAL)
        elif ptype == P.PUBACK:
            callback = self.awaiting_ack.pop(P.parse_packet_id(body), None)
            if callback is not None:
                callback()
        # PUBREC/PUBREL/PUBCOMP/AUTH and server-only types: ignored, as TB's switch does.

    def on_subscribe(self, packet_id, filters):
        sim = self.sim
        self.activity()
        codes = []
        deliver_pending = False
        profile = sim._profile_of(self.device_name) or Profile("", "")
        for topic_filter, qos in filters:
            granted = min(qos, 1)
            # The profile's attributes-subscribe filter is tried first: a filter text it matches
            # makes an attribute subscription, but pushes still go out on the v1 topic (§14.10).
            attr_type = topics.V1 if profile.is_attributes_subscription(topic_filter) else \
                topics.ATTRIBUTE_SUBSCRIPTIONS.get(topic_filter)
            if attr_type is not None:
                # The subscription message is rate limited; when refused, the actor never registers it
                # but TB still grants it in the SUBACK.
                if sim._check_limits(self.device_name, 0):
                    self.attr_type = attr_type
            elif topic_filter in topics.RPC_SUBSCRIPTIONS:
                if sim._check_limits(self.device_name, 0):
                    self.rpc_type = topics.RPC_SUBSCRIPTIONS[topic_filter]
                    deliver_pending = True
            elif topic_filter not in topics.PLAIN_SUBSCRIPTIONS:
                codes.append(RC_TOPIC_FILTER_INVALID if self.version == P.V5 else 0x80)
                continue
            self.subscriptions[topic_filter] = granted
            codes.append(granted)
        sim.store.event("subscribe", device=self.device_name,
                        filters=[[f, c] for (f, _), c in zip(filters, codes)])
        self.write(P.suback(packet_id, codes, self.version))
        if deliver_pending:
            # The device actor sends pending RPCs once the RPC subscription reached it: after the SUBACK.
            sim._deliver_pending_rpcs(self)

    def on_unsubscribe(self, packet_id, filters):
        self.activity()
        codes = []
        for topic_filter in filters:
            if topic_filter not in self.subscriptions:
                codes.append(RC_NO_SUBSCRIPTION)
                continue
            del self.subscriptions[topic_filter]
            if topic_filter in topics.ATTRIBUTE_SUBSCRIPTIONS:
                self.attr_type = None
            elif topic_filter in topics.RPC_SUBSCRIPTIONS:
                self.rpc_type = None
            codes.append(0)
        self.write(P.unsuback(packet_id, codes, self.version))

    def _validation_failure(self, msg, reason):
        """sendResponseForAdaptorErrorOrCloseContext (§5)."""
        profile = self.sim._profile_of(self.device_name)
        flag = bool(profile and profile.puback_on_validation_failure)
        self.sim.store.event("publish", device=self.device_name, topic=msg.topic, qos=msg.qos,
                             accepted=False, reason=reason, size=len(msg.payload))
        if (flag or self.version == P.V5) and msg.packet_id > 0:
            # On 3.1.1 this PUBACK is indistinguishable from success; the data is dropped.
            self.ack(msg.packet_id, RC_PAYLOAD_FORMAT_INVALID)
        else:
            self.close("validation", RC_PAYLOAD_FORMAT_INVALID)

    def _rate_limited(self, msg):
        self.sim.store.event("publish", device=self.device_name, topic=msg.topic, qos=msg.qos,
                             accepted=False, reason="rate-limit", size=len(msg.payload))
        # getPubAckCallback.onError: no PUBACK, connection closed (§7).
        self.close("rate-limit", RC_IMPLEMENTATION_ERROR)

    def _accepted(self, msg, **extra):
        self.sim.store.event("publish", device=self.device_name, topic=msg.topic, qos=msg.qos,
                             accepted=True, size=len(msg.payload), **extra)

    async def on_device_publish(self, msg):
        """processDevicePublish: the profile's attributes filter, then its telemetry filter, then the
        fixed topics in ThingsBoard's order; anything else is acknowledged and dropped."""
        sim, store = self.sim, self.sim.store
        self.activity()
        device = store.get(self.device_name)
        if device is None:                   # deleted meanwhile; the close is on its way
            return
        topic = msg.topic
        if topic.startswith("v1/gateway/"):
            # Not a gateway: TB only logs an error, so there is no PUBACK and the session stays.
            store.event("publish", device=device.name, topic=topic, qos=msg.qos, accepted=False,
                        reason="gateway-topic", size=len(msg.payload))
            return
        profile = sim._profile_of(device.name) or Profile("", "")
        kind, rest, family = topics.classify(topic, profile)
        try:
            if kind == "attributes":
                values = tbjson.attribute_values(msg.payload)
                if not sim._check_limits(device.name, len(values)):
                    return self._rate_limited(msg)
                saved = sim._save_attributes(device, values, topic)
                self._accepted(msg, saved=saved)
                self.ack(msg.packet_id)
            elif kind == "telemetry":
                entries = tbjson.telemetry_entries(msg.payload, int(time.time() * 1000))
                points = sum(len(values) for _, values in entries)
                if not sim._check_limits(device.name, points):
                    return self._rate_limited(msg)
                saved = sim._save_telemetry(device, entries, topic)
                self._accepted(msg, entries=len(entries), dataPoints=points, saved=saved,
                               keys=sorted({k for _, values in entries for k in values}))
                if entries:
                    # `[]` with QoS 1 never gets a PUBACK: the pack callback waits for 0 messages (§3).
                    self.ack(msg.packet_id)
            elif kind == "attribute-request":
                request_id, client_keys, shared_keys = tbjson.attribute_request(rest, msg.payload)
                if not sim._check_limits(device.name, 0):
                    return self._rate_limited(msg)
                self.attr_request_type = family
                self._accepted(msg)
                self.ack(msg.packet_id)
                self.send_publish(family.attributes_response + str(request_id),
                                  tbjson.to_json(_attribute_response(store, device, client_keys, shared_keys)))
            elif kind == "rpc-response":
                try:
                    request_id = tbjson.java_parse_int(rest)
                except ValueError:
                    raise tbjson.Invalid("rpc response id") from None
                if not sim._check_limits(device.name, 0):
                    return self._rate_limited(msg)
                self._accepted(msg)
                self.ack(msg.packet_id)
                sim._rpc_answered(device.name, request_id, msg.payload)
            elif kind == "client-rpc":
                request_id, method, params = tbjson.server_rpc_request(rest, msg.payload)
                self.client_rpc_type = family
                if method == "getSessionLimits" and family is topics.V1:
                    # Answered by the transport itself, without rate limiting.
                    self._accepted(msg, method=method)
                    self.ack(msg.packet_id)
                    self.send_publish(family.rpc_response + str(request_id),
                                      tbjson.to_json(session_limits_payload(sim.rate_limits)))
                    return
                if not sim._check_limits(device.name, 0):
                    return self._rate_limited(msg)
                self._accepted(msg, method=method)
                store.event("client-rpc", device=device.name, requestId=request_id, method=method, params=params)
                self.ack(msg.packet_id)
                sim._client_rpc(self, request_id, method, params)
            elif kind == "claim":
                _parse_claim(msg.payload)
                if not sim._check_limits(device.name, 0):
                    return self._rate_limited(msg)
                self._accepted(msg)
                self.ack(msg.packet_id)
            elif kind == "ota":
                self._ota_request(msg, device, *rest)
            elif kind == "protobuf":
                raise tbjson.Invalid("protobuf payloads are not supported by tbsim")
            else:
                # Unknown topic, including v1/devices/me/telemetry on a profile with a custom
                # telemetry filter: PUBACK and drop, session kept (§3 last item, §14.10).
                store.event("publish", device=device.name, topic=topic, qos=msg.qos, accepted=False,
                            reason="unknown-topic", size=len(msg.payload))
                self.ack(msg.packet_id, RC_TOPIC_NAME_INVALID)
        except tbjson.Invalid as e:
            log.info("invalid publish on %s from %s: %s", topic, device.name, e)
            self._validation_failure(msg, "validation")
        except tbjson.Crash as e:
            # Uncaught in TB: exceptionCaught closes the channel whatever the profile says (§5).
            log.info("publish on %s from %s crashes TB's adaptor: %s", topic, device.name, e)
            store.event("publish", device=device.name, topic=topic, qos=msg.qos, accepted=False,
                        reason="runtime-error", size=len(msg.payload))
            self.close("runtime-error", RC_SERVER_SHUTTING_DOWN)

    def _ota_request(self, msg, device, kind, request_id, chunk_text):
        """getOtaPackageCallback / OtaPackageCallback / sendOtaPackage of MqttTransportHandler."""
        sim, store = self.sim, self.sim.store
        payload = msg.payload.decode("utf-8", "replace")
        try:
            # Integer.parseInt, uncaught: a payload or chunk number that is not an int closes.
            chunk_size = tbjson.java_parse_int(payload) if payload else 0
            chunk = tbjson.java_parse_int(chunk_text)
        except ValueError:
            raise tbjson.Crash("NumberFormatException in an OTA request") from None
        if chunk_size > 0:
            self.ota_chunk_sizes[request_id] = chunk_size
        else:
            chunk_size = self.ota_chunk_sizes.get(request_id, 0)
        if chunk_size > ota.MAX_PAYLOAD:
            # Checked before any package lookup; no PUBACK for this request.
            return self._ota_error(msg, "PAYLOAD_TOO_LARGE", kind)
        package = self.ota_packages.get(request_id)
        if package is None:
            # First request of this requestId: a core lookup, which is a rate-limited message.
            if not sim._check_limits(device.name, 0):
                store.event("publish", device=device.name, topic=msg.topic, qos=msg.qos, accepted=False,
                            reason="rate-limit", size=len(msg.payload))
                return self.close("rate-limit", RC_IMPLEMENTATION_ERROR)    # closed, no error publish
            package = sim._ota_package_for(device.name, ota.SOFTWARE if kind == "sw" else ota.FIRMWARE)
            if package is None:
                return self._ota_error(msg, "NOT_FOUND", kind)
            if package.data is None:
                return self._ota_error(msg, "FAILURE", kind)                # a URL package
            # Later chunks of this requestId get this package, even if another is assigned meanwhile.
            self.ota_packages[request_id] = package
        self._accepted(msg, ota=kind, requestId=request_id, chunk=chunk, chunkSize=chunk_size)
        self.ack(msg.packet_id)
        data = ota.chunk_of(package.data, chunk_size, chunk)
        if data is None:
            log.info("OTA chunk %d of %d bytes overflows TB's int arithmetic: nothing sent", chunk, chunk_size)
            return
        # DEVICE_SOFTWARE_FIRMWARE_RESPONSES_TOPIC_FORMAT: the chunk is reprinted as an int ("007" -> 7).
        self.send_publish(f"v2/{kind}/response/{request_id}/chunk/{chunk}", data)

    def _ota_error(self, msg, error, kind):
        """sendOtaPackageError: the status text on v2/fw/error (for software requests too), then close."""
        self.sim.store.event("publish", device=self.device_name, topic=msg.topic, qos=msg.qos, accepted=False,
                             reason="ota-error", error=error, size=len(msg.payload))
        self.send_publish(topics.FW_ERROR, error)
        self.close(f"ota-{error.lower().replace('_', '-')}", RC_IMPLEMENTATION_ERROR)


def _parse_claim(payload):
    text = payload.decode("utf-8", "replace")
    if not text:
        return
    obj = tbjson.parse(text)
    if not isinstance(obj, dict):
        raise tbjson.Invalid("claim payload is not an object")
    if "secretKey" in obj:
        tbjson.as_string(obj["secretKey"])
    if "durationMs" in obj:
        tbjson.as_long(obj["durationMs"])


def _attribute_response(store, device, client_keys, shared_keys):
    """JsonConverter.toJson(GetAttributeResponseMsg): sections omitted when empty (§4)."""
    # The adaptor asks for both scopes when neither key list is given; a given but empty list means
    # "all keys of that scope" (DeviceActorMessageProcessor.getAttributeKvEntries).
    if client_keys is None and shared_keys is None:
        client_keys, shared_keys = set(), set()

    def pick(attributes, keys):
        if keys is None:
            return {}
        return dict(attributes) if not keys else {k: v for k, v in attributes.items() if k in keys}

    with store.lock:
        client = pick(device.client_attributes, client_keys)
        shared = pick(device.shared_attributes, shared_keys)
    result = {}
    if client:
        result["client"] = client
    if shared:
        result["shared"] = shared
    return result
