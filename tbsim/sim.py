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

from . import tbjson
from .http_api import HttpApi
from .ratelimits import PLANS, DeviceLimits
from .session import RC_ADMINISTRATIVE_ACTION, Session
from .store import ACCESS_TOKEN, MQTT_BASIC, Profile, Store

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
                 max_connections=10000, puback_on_validation_failure=False):
        if rate_limits not in (None, "off") and rate_limits not in PLANS:
            raise ValueError(f"rate_limits must be None, 'free' or 'paid', not {rate_limits!r}")
        if provision_subscribe not in ("grant", "refuse", "ignore"):
            raise ValueError("provision_subscribe must be 'grant', 'refuse' or 'ignore'")
        if mqtts_port is not None and not (certfile and keyfile):
            raise ValueError("mqtts_port needs certfile and keyfile")
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
        self._sweeper = loop.create_task(self._sweep())
        log.info("tbsim listening mqtt=%s:%s http=%s:%s%s", self.host, self.mqtt_port, self.host, self.http_port,
                 f" mqtts={self.host}:{self.mqtts_port}" if self.mqtts_port is not None else "")

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
        for rpc in list(self._pending_rpcs.get(session.device_name, {}).values()):
            if not rpc.sent and not rpc.future.done():
                self._send_rpc(session, rpc)

    def _send_rpc(self, session, rpc):
        rpc.sent = True
        name = session.device_name
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
            if session.rpc_type is not None:
                self._send_rpc(session, rpc)
                break
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
        self._run(self._push_shared, name, dict(attributes))

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
