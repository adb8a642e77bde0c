"""TBSim: the ThingsBoard-compatible device endpoint, run on its own asyncio loop in a daemon thread.

Every public method is safe to call from any thread (tests call them from pytest's thread).
"""
import asyncio
import json
import logging
import os
import ssl
import threading
import time

from . import kvutils, ota, tbjson
from .http_api import HttpApi
from .provisioning import provision
from .ratelimits import PLANS, DeviceLimits
from .session import RC_ADMINISTRATIVE_ACTION, Session
from .store import ACCESS_TOKEN, MQTT_BASIC, PROVISION_SECRETS, Profile, Store, mask

PROVISIONING_MODES = ("tb", "success-then-refuse")
_UNSET = object()

log = logging.getLogger("tbsim")


class _Rpc:
    __slots__ = ("request_id", "method", "params", "future", "sent")

    def __init__(self, request_id, method, params, future):
        self.request_id = request_id
        self.method = method
        self.params = params
        self.future = future
        self.sent = False


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """StreamReaderProtocol that can hold reading until TLS starts, so no ClientHello byte is read as
    plain data while a deliberate handshake delay runs."""

    def __init__(self, reader, callback, pause):
        super().__init__(reader, callback)
        self._pause = pause

    def connection_made(self, transport):
        if self._pause:
            transport.pause_reading()
        super().connection_made(transport)


class TBSim:
    def __init__(self, profiles=(), rate_limits=None, state_file=None, host="127.0.0.1", mqtt_port=0,
                 http_port=0, mqtts_port=None, certfile=None, keyfile=None, provision_close_s=60.0,
                 inactivity_timeout_s=600.0, provision_subscribe="grant", tls_handshake_delay_s=0.0,
                 connack_delay_s=0.0, connect_timeout_s=10.0, client_rpc_timeout_s=60.0,
                 max_connections=10000, puback_on_validation_failure=False, coap_port=None,
                 provisioning="tb", provision_delay_s=0.0):
        if rate_limits not in (None, "off") and rate_limits not in PLANS:
            raise ValueError(f"rate_limits must be None, 'free' or 'paid', not {rate_limits!r}")
        if provision_subscribe not in ("grant", "refuse", "ignore"):
            raise ValueError("provision_subscribe must be 'grant', 'refuse' or 'ignore'")
        if mqtts_port is not None and not (certfile and keyfile):
            raise ValueError("mqtts_port needs certfile and keyfile")
        if provisioning not in PROVISIONING_MODES:
            raise ValueError(f"provisioning must be one of {', '.join(PROVISIONING_MODES)}")
        if not inactivity_timeout_s > 0:
            raise ValueError("inactivity_timeout_s must be positive")
        self.rate_limits = None if rate_limits == "off" else rate_limits
        self.state_file = state_file
        self.host = host
        self.mqtt_port = mqtt_port
        self.http_port = http_port
        self.mqtts_port = mqtts_port
        self.certfile = certfile
        self.keyfile = keyfile
        self.provision_close_s = provision_close_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self.provision_subscribe = provision_subscribe
        self.tls_handshake_delay_s = tls_handshake_delay_s
        self.connack_delay_s = connack_delay_s
        self.connect_timeout_s = connect_timeout_s
        self.client_rpc_timeout_s = client_rpc_timeout_s
        self.max_connections = max_connections
        self.coap_port = coap_port                  # None: no CoAP listener
        # "tb": as ThingsBoard. "success-then-refuse": every valid request gets SUCCESS, with
        # credentials that are never stored, so CONNECT with them gets CONNACK 5 (a storm test).
        self.provisioning = provisioning
        self.provision_delay_s = provision_delay_s  # fault knob: a slow core, on every transport
        self.client_rpc_handler = None
        # Applies to devices that have no profile (e.g. created with --device and no profile key).
        self.puback_on_validation_failure = puback_on_validation_failure
        self.store = Store()
        if state_file and os.path.exists(state_file):
            self.store.load(state_file)
        for profile in profiles:
            self.store.add_profile(profile)
        self._limits = {}
        self._sessions = {}          # device name -> [Session]
        self._connections = set()
        self._transports = set()
        self._pending_rpcs = {}      # device name -> {request id: _Rpc}
        self._loop = None
        self._thread = None
        self._servers = []

    # ---- start / stop ----
    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running:
            raise RuntimeError("already running")
        ready = threading.Event()
        errors = []
        self._thread = threading.Thread(target=self._thread_main, args=(ready, errors), name="tbsim", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("tbsim did not start within 30 s")
        if errors:
            self._thread.join(5)
            self._thread = None
            raise errors[0]
        return self

    def _thread_main(self, ready, errors):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as e:          # report to start(), do not die silently
            errors.append(e)
            ready.set()
            loop.run_until_complete(self._shutdown())
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _startup(self):
        loop = asyncio.get_running_loop()

        def factory(tls):
            def make():
                reader = asyncio.StreamReader(limit=2 ** 16)
                return _StreamProtocol(reader, lambda r, w: self._on_connection(r, w, tls), pause=tls)
            return make

        server = await loop.create_server(factory(False), self.host, self.mqtt_port, reuse_address=True, backlog=2048)
        self._servers.append(server)
        self.mqtt_port = server.sockets[0].getsockname()[1]
        if self.mqtts_port is not None:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(self.certfile, self.keyfile)
            server = await loop.create_server(factory(True), self.host, self.mqtts_port, reuse_address=True, backlog=2048)
            self._servers.append(server)
            self.mqtts_port = server.sockets[0].getsockname()[1]
        self._http = HttpApi(self)
        server = await asyncio.start_server(self._http.handle, self.host, self.http_port, reuse_address=True)
        self._servers.append(server)
        self.http_port = server.sockets[0].getsockname()[1]
        if self.coap_port is not None:
            from .coap import start_coap           # aiocoap is only imported when CoAP is on
            self._coap, self.coap_port = await start_coap(self, self.host, self.coap_port)
        self._sweeper = loop.create_task(self._sweep())
        log.info("tbsim listening mqtt=%s:%s http=%s:%s%s%s", self.host, self.mqtt_port, self.host, self.http_port,
                 f" mqtts={self.host}:{self.mqtts_port}" if self.mqtts_port is not None else "",
                 f" coap={self.host}:{self.coap_port}" if self.coap_port is not None else "")

    def stop(self):
        """Close the listeners and every connection abruptly (as if the server died); state is kept."""
        if not self.running:
            return
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(15)
            self._thread = None
        if self.state_file:
            self.save()

    async def _shutdown(self):
        for server in self._servers:
            server.close()
        self._servers = []
        for session in list(self._connections):
            session.close("server-stop", abort=True)
        for transport in list(self._transports):
            transport.abort()
        for calls in self._pending_rpcs.values():
            for rpc in calls.values():
                if not rpc.future.done():
                    rpc.future.set_result({"error": "timeout"})
        sweeper = getattr(self, "_sweeper", None)
        if sweeper:
            sweeper.cancel()
        coap = getattr(self, "_coap", None)
        if coap is not None:
            self._coap = None
            await coap.shutdown()
        await asyncio.sleep(0)

    def save(self, path=None):
        self.store.save(path or self.state_file)

    async def _sweep(self):
        interval = max(0.02, min(0.25, self.inactivity_timeout_s / 4, self.connect_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self._connections):
                session.check_timers(now)

    # ---- connections ----
    async def _on_connection(self, reader, writer, tls):
        transport = writer.transport
        if len(self._connections) + len(self._transports) >= self.max_connections:
            transport.abort()
            return
        self._transports.add(transport)
        try:
            if tls:
                if self.tls_handshake_delay_s:
                    await asyncio.sleep(self.tls_handshake_delay_s)
                try:
                    await asyncio.wait_for(writer.start_tls(self._ssl), self.connect_timeout_s)
                except (asyncio.TimeoutError, ssl.SSLError, OSError, ConnectionError) as e:
                    peer = transport.get_extra_info("peername")
                    self.store.event("close", device=None, reason="tls-handshake-failed", detail=str(e),
                                     peer=f"{peer[0]}:{peer[1]}" if peer else None)
                    transport.abort()
                    return
            session = Session(self, reader, writer, tls)
            self._connections.add(session)
            self._transports.discard(transport)
            try:
                await session.run()
            finally:
                self._connections.discard(session)
        finally:
            self._transports.discard(transport)

    def _register(self, session):
        with self.store.lock:
            self._sessions.setdefault(session.device_name, []).append(session)

    def _sessions_of(self, name):
        with self.store.lock:
            return [s for s in self._sessions.get(name, []) if not s.closed]

    def _session_closed(self, session, reason):
        with self.store.lock:
            if session.device_name in self._sessions:
                remaining = [s for s in self._sessions[session.device_name] if s is not session]
                if remaining:
                    self._sessions[session.device_name] = remaining
                else:
                    del self._sessions[session.device_name]
        self._connections.discard(session)
        if session.kind == "device" and self.rate_limits:
            # The session-close event is a rate-limited message too; its outcome changes nothing.
            self._check_limits(session.device_name, 0)
        self.store.event("close", device=session.device_name, reason=reason, session=session.kind,
                         clientId=session.client_id, peer=session.peer)
        log.info("closed %s (%s): %s", session.peer, session.device_name or session.kind, reason)

    def _check_limits(self, name, data_points):
        if not self.rate_limits:
            return True
        with self.store.lock:
            limits = self._limits.get(name)
            if limits is None:
                limits = self._limits[name] = DeviceLimits(self.rate_limits)
            return limits.check(data_points)

    def _profile_of(self, name):
        device = self.store.get(name)
        if device is None or device.profile_key is None:
            return Profile("", "", puback_on_validation_failure=self.puback_on_validation_failure)
        return self.store.profiles.get(device.profile_key)

    # ---- server-side RPC ----
    def _deliver_pending_rpcs(self, session):
        """sendPendingRequests under the default BURST strategy, for an MQTT (ASYNC) session: every
        pending RPC is sent again, delivered-but-unanswered ones included, with its original
        request id, in the order they were made (DeviceActorMessageProcessor.java). Closing a
        session does not clear them; only an answer or the timeout does."""
        for rpc in list(self._pending_rpcs.get(session.device_name, {}).values()):
            if not rpc.future.done():
                self._send_rpc(session, rpc)

    def _send_rpc(self, session, rpc):
        resend = rpc.sent
        rpc.sent = True
        name = session.device_name
        self.store.event("rpc-sent", device=name, requestId=rpc.request_id, resend=resend)
        payload = tbjson.to_json({"method": rpc.method, "params": rpc.params})
        session.send_publish(session.rpc_type.rpc_request + str(rpc.request_id), payload,
                             on_ack=lambda: self.store.event("rpc-delivered", device=name, requestId=rpc.request_id))

    async def _rpc(self, name, method, params, timeout_s):
        device = self.store.get(name)
        if device is None:
            raise KeyError(name)
        with self.store.lock:
            request_id = device.rpc_seq
            device.rpc_seq += 1
        rpc = _Rpc(request_id, method, params, asyncio.get_running_loop().create_future())
        self._pending_rpcs.setdefault(name, {})[request_id] = rpc
        self.store.event("rpc", device=name, requestId=request_id, method=method, params=params)
        for session in self._sessions_of(name):
            if session.rpc_type is not None:      # BURST: at once, to every RPC subscriber
                self._send_rpc(session, rpc)
        try:
            return await asyncio.wait_for(asyncio.shield(rpc.future), timeout_s)
        except asyncio.TimeoutError:
            self.store.event("rpc-timeout", device=name, requestId=request_id)
            return {"error": "timeout"}
        finally:
            calls = self._pending_rpcs.get(name, {})
            calls.pop(request_id, None)
            if not calls:
                self._pending_rpcs.pop(name, None)

    def _rpc_answered(self, name, request_id, payload):
        text = payload.decode("utf-8", "replace")
        try:
            response = json.loads(text)
        except ValueError:
            response = text
        self.store.event("rpc-response", device=name, requestId=request_id, response=response)
        rpc = self._pending_rpcs.get(name, {}).get(request_id)
        if rpc is not None and not rpc.future.done():
            rpc.future.set_result(response)

    def _client_rpc(self, session, request_id, method, params):
        """Device->server RPC: answered by client_rpc_handler, else {"error":"timeout"} after 60 s."""
        topic = session.client_rpc_type.rpc_response + str(request_id)
        handler = self.client_rpc_handler
        if handler is not None:
            try:
                result = handler(session.device_name, method, params)
            except Exception:
                log.exception("client RPC handler failed")
                result = None
            if result is not None:
                session.send_publish(topic, tbjson.to_json(result))
                return

        def timeout():
            if not session.closed:
                session.send_publish(topic, '{"error":"timeout"}')
        session._timers.append(asyncio.get_running_loop().call_later(self.client_rpc_timeout_s, timeout))

    # ---- the provisioning core (MQTT, HTTP and CoAP) ----
    def _provision(self, req, transport):
        """Decide a parsed request (provisioning.provision), log it with secrets masked."""
        status, reply, name = provision(self.store, req, refuse_issued=self.provisioning == "success-then-refuse")
        shown = dict(req)
        # The profile's key and secret, and the credentials a device asks for: masked with the
        # firmware's rule (store.mask), so the event shows them as every log line does.
        for secret_field in PROVISION_SECRETS:
            if shown.get(secret_field):
                shown[secret_field] = mask(shown[secret_field])
        self.store.event("provision", request=shown, status=status, deviceName=name, transport=transport)
        log.info("provision request over %s for %r: %s", transport, name, status)
        return status, reply, name

    def _device_post(self, token, kind, payload, transport):
        """POST /api/v1/<token>/telemetry|attributes over HTTP or CoAP: "ok" once accepted (keys are
        checked later, as over MQTT), "unauthorized" for a token that is no ACCESS_TOKEN, "invalid"
        for a payload ThingsBoard's converter refuses (or throws on)."""
        device = self.store.by_credentials_id(token)
        if device is None or device.credentials_type != ACCESS_TOKEN:
            self.store.event("publish", device=None, topic=f"{transport}:{kind}", qos=None, accepted=False,
                             reason="unauthorized", size=len(payload))
            return "unauthorized"
        topic = f"{transport}:{kind}"
        try:
            if kind == "telemetry":
                entries = tbjson.telemetry_entries(payload, int(time.time() * 1000))
                saved = self._save_telemetry(device, entries, topic, transport)
            else:
                saved = self._save_attributes(device, tbjson.attribute_values(payload), topic, transport)
        except (tbjson.Invalid, tbjson.Crash) as e:
            self.store.event("publish", device=device.name, topic=topic, qos=None, accepted=False,
                             reason="validation", size=len(payload), error=str(e))
            return "invalid"
        self.store.event("publish", device=device.name, topic=topic, qos=None, accepted=True, size=len(payload),
                         saved=saved)
        return "ok"

    # ---- saving device data (the rule engine's save nodes) ----
    def _save_telemetry(self, device, entries, topic, transport="mqtt"):
        """Store telemetry unless a key is invalid (KvUtils): then nothing of the message is saved.
        Returns True when saved. The caller has already accepted the message (PUBACK, HTTP 200,
        CoAP 2.01): ThingsBoard validates keys later, in the save node."""
        bad = kvutils.first_invalid(k for _, values in entries for k in values)
        if bad is not None:
            self.store.event("dropped", device=device.name, topic=topic, transport=transport, key=bad[0],
                             error=bad[1])
            log.info("telemetry from %s dropped after acceptance: key %r: %s", device.name, bad[0], bad[1])
            return False
        self.store.add_telemetry(device, entries)
        return True

    def _save_attributes(self, device, values, topic, transport="mqtt"):
        bad = kvutils.first_invalid(values)
        if bad is not None:
            self.store.event("dropped", device=device.name, topic=topic, transport=transport, key=bad[0],
                             error=bad[1])
            log.info("attributes from %s dropped after acceptance: key %r: %s", device.name, bad[0], bad[1])
            return False
        with self.store.lock:
            device.client_attributes.update(values)
        self.store.event("attributes", device=device.name, values=values)
        return True

    # ---- OTA packages (DefaultOtaPackageStateService) ----
    def _ota_effective(self, device, kind):
        """The package a device gets: its own, else its profile's (None when neither)."""
        own = device.firmware_id if kind == ota.FIRMWARE else device.software_id
        if own is not None:
            return own
        profile = self.store.profiles.get(device.profile_key) if device.profile_key else None
        if profile is None:
            return None
        return profile.firmware_id if kind == ota.FIRMWARE else profile.software_id

    def _ota_package_for(self, device_name, kind):
        device = self.store.get(device_name)
        package_id = self._ota_effective(device, kind) if device else None
        return self.store.ota_packages.get(package_id) if package_id else None

    def _ota_announce(self, device, kind, package_id):
        """What ThingsBoard writes when a device's effective package changes."""
        now = int(time.time() * 1000)
        prefix = ota.PREFIX[kind]
        package = self.store.ota_packages.get(package_id) if package_id else None
        if package is None:
            self._delete_shared(device.name, [f"{prefix}_{key}" for key in ota.ALL_KEYS])
            return
        self.store.add_telemetry(device, [(now, ota.target_telemetry(package, now))])
        self.store.add_telemetry(device, [(now, {f"{prefix}_state": "INITIATED"})])
        values, deleted = ota.attribute_values(package)
        self._push_shared(device.name, values)
        if deleted:
            self._delete_shared(device.name, deleted)

    def _assign_ota(self, device_name=None, profile_key=None, firmware=_UNSET, software=_UNSET):
        store = self.store
        for package_id, kind in ((firmware, ota.FIRMWARE), (software, ota.SOFTWARE)):
            if package_id is _UNSET or package_id is None:
                continue
            package = store.ota_packages.get(package_id)
            if package is None:
                raise KeyError(f"OTA package {package_id} not found")
            if package.type != kind:
                raise ValueError(f"OTA package {package_id} is {package.type}, not {kind}")
        if (device_name is None) == (profile_key is None):
            raise ValueError("assign to a device or to a profile")
        if device_name is not None:
            targets = [store.get(device_name)]
            if targets[0] is None:
                raise KeyError(device_name)
        else:
            if profile_key not in store.profiles:
                raise KeyError(profile_key)
            targets = [d for d in store.devices.values() if d.profile_key == profile_key]
        before = {(d.name, k): self._ota_effective(d, k) for d in targets for k in ota.PREFIX}
        owner = store.get(device_name) if device_name is not None else store.profiles[profile_key]
        with store.lock:
            if firmware is not _UNSET:
                owner.firmware_id = firmware
            if software is not _UNSET:
                owner.software_id = software
        store.event("ota-assigned", device=device_name, profile=profile_key,
                    firmware=None if firmware is _UNSET else firmware,
                    software=None if software is _UNSET else software)
        for d in targets:
            for kind in ota.PREFIX:
                now_effective = self._ota_effective(d, kind)
                if now_effective != before[(d.name, kind)]:
                    self._ota_announce(d, kind, now_effective)

    def _add_ota_package(self, **kw):
        package = ota.make_package(**kw)
        with self.store.lock:
            for other in self.store.ota_packages.values():
                if (other.type, other.title, other.version) == (package.type, package.title, package.version):
                    raise ValueError("OtaPackage with such title and version already exists!")
            self.store.ota_packages[package.id] = package
        self.store.event("ota-package", id=package.id, title=package.title, version=package.version,
                         type=package.type, size=package.size)
        return package.info()

    def _delete_ota_package(self, package_id):
        with self.store.lock:
            if package_id not in self.store.ota_packages:
                raise KeyError(package_id)
            users = [d.name for d in self.store.devices.values() if package_id in (d.firmware_id, d.software_id)]
            users += [p.key for p in self.store.profiles.values() if package_id in (p.firmware_id, p.software_id)]
            if users:
                # OtaPackageServiceImpl refuses to delete a package still referenced.
                raise ValueError(f"The otaPackage referenced by {', '.join(users)} cannot be deleted!")
            del self.store.ota_packages[package_id]
        return True

    # ---- admin actions inside the loop ----
    def _push_shared(self, name, attributes):
        device = self.store.get(name)
        if device is None:
            raise KeyError(name)
        with self.store.lock:
            device.shared_attributes.update(attributes)
        self.store.event("shared-attributes", device=name, values=attributes)
        for session in self._sessions_of(name):
            if session.attr_type is not None:
                session.send_publish(session.attr_type.attributes_sub, tbjson.to_json(attributes))

    def _delete_shared(self, name, keys):
        device = self.store.get(name)
        if device is None:
            raise KeyError(name)
        with self.store.lock:
            for key in keys:
                device.shared_attributes.pop(key, None)
        self.store.event("shared-attributes-deleted", device=name, keys=list(keys))
        for session in self._sessions_of(name):
            if session.attr_type is not None:
                session.send_publish(session.attr_type.attributes_sub, tbjson.to_json({"deleted": list(keys)}))

    def _delete_device(self, name):
        device = self.store.delete_device(name)
        if device is None:
            return False
        self._limits.pop(name, None)
        for session in self._sessions_of(name):
            session.close("deleted", RC_ADMINISTRATIVE_ACTION)
        self.store.event("device-deleted", device=name)
        return True

    def _run(self, fn, *args):
        """Run fn(*args) on the loop when it runs (sessions live there), else directly."""
        if not self.running:
            return fn(*args)

        async def call():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(15)

    # ---- public API ----
    def add_profile(self, profile):
        self.store.add_profile(profile)

    def add_device(self, name, profile_key=None, token=None, credentials_type=ACCESS_TOKEN, basic=None,
                   provision_state=None):
        """Create a (pre-provisioned) device; returns its dict. token=None makes a random 20-char token."""
        credentials = basic if credentials_type == MQTT_BASIC else token
        device = self.store.add_device(name, profile_key, credentials_type, credentials, provision_state)
        self.store.event("device-created", device=name)
        return self.store.device_dict(device)

    def devices(self):
        with self.store.lock:
            return [self.store.device_dict(d, bool(self._sessions_of(d.name))) for d in self.store.devices.values()]

    def device(self, name):
        with self.store.lock:
            device = self.store.devices.get(name)
            return self.store.device_dict(device, bool(self._sessions_of(name))) if device else None

    def telemetry(self, name):
        with self.store.lock:
            device = self.store.devices.get(name)
            return [dict(e) for e in device.telemetry] if device else []

    def delete_device(self, name):
        return self._run(self._delete_device, name)

    def push_shared_attributes(self, name, attributes):
        """Set shared attributes as an administrator does through the REST API, typed as its
        controller types them (tbjson.rest_attribute_values: a null is dropped, "30" stays a
        string, 1e3 is a DOUBLE), saved and pushed to a subscribed session."""
        values = tbjson.rest_attribute_values(json.dumps(dict(attributes)))
        bad = kvutils.first_invalid(values)
        if bad is not None:
            raise ValueError(f"{bad[1]}: {bad[0]!r}")
        self._run(self._push_shared, name, values)

    def delete_shared_attributes(self, name, keys):
        self._run(self._delete_shared, name, list(keys))

    def rpc(self, name, method, params=None, timeout_s=10):
        """Two-way server-side RPC: the device's response (parsed JSON when it is JSON) or {"error": "timeout"}."""
        if not self.running:
            if self.store.get(name) is None:
                raise KeyError(name)
            time.sleep(timeout_s)
            return {"error": "timeout"}
        future = asyncio.run_coroutine_threadsafe(self._rpc(name, method, params, timeout_s), self._loop)
        return future.result(timeout_s + 15)

    def add_ota_package(self, title, version, data=None, url=None, type=ota.FIRMWARE, checksum_algorithm="SHA256",
                        checksum=None, tag=None, file_name=None, content_type=None):
        """Upload an OTA package (data bytes, or a url); returns its info dict with its "id" and the
        checksum ThingsBoard would store. A given checksum must equal the computed one."""
        return self._run(lambda: self._add_ota_package(
            title=title, version=version, data=data, url=url, type=type, checksum_algorithm=checksum_algorithm,
            checksum_text=checksum, tag=tag, file_name=file_name, content_type=content_type))

    def ota_packages(self):
        with self.store.lock:
            return [p.info() for p in self.store.ota_packages.values()]

    def delete_ota_package(self, package_id):
        return self._run(self._delete_ota_package, package_id)

    def assign_ota(self, device=None, profile=None, firmware=_UNSET, software=_UNSET):
        """Assign (an id) or unassign (None) firmware and/or software to one device or to a profile;
        each device whose effective package changes is told as ThingsBoard tells it."""
        self._run(lambda: self._assign_ota(device, profile, firmware, software))

    def events(self, kind=None, since=0):
        return self.store.events(kind, since)[0]

    def wait_for(self, predicate, timeout_s=10, interval_s=0.05):
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
