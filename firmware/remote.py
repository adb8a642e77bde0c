# What the platform may ask of a running meter: a few safe server-side RPC methods and one
# shared attribute. Everything arriving here is treated as hostile until parsed and checked.
#
# RPC (v1/devices/me/rpc/request/<id>, reply on .../response/<id>, docs/thingsboard.md §4):
#   status       -> state, firmware title and version, pulse index, energy, power, uptime, heap,
#                   backlog; never a secret
#   reboot       -> the index is saved, the reply sent, then the meter resets
#   reprovision  -> as the technician's power-cycle gesture: provision again and resend the
#                   attributes, keeping the working credentials if the platform says no
#   anything else -> {"error": "unknown method"}
#
# Acting twice on one request is ruled out: ThingsBoard (default BURST strategy) sends every
# delivered but unanswered two-way RPC again, with the same request id, to the next session
# that subscribes, until it expires (docs/thingsboard.md §14.8); a meter that reset before its
# reply got out would reset again on every reconnect. So before acting on reboot or
# reprovision the meter writes the request id and method to flash (state/rpc.json); the same
# id and method in the first _REPEAT_MS of the next session is answered {"result": "already
# done"} and not acted on. Request ids restart at 0 when ThingsBoard restarts, so the record is
# honoured only then, and removed once that window has passed: after it, the same id is a new
# request. The record goes to flash before the reply, and the action follows whether or not
# the reply got out; a power cut between the record and the action (milliseconds) loses that
# one action, which a new request serves.
# Shared attribute: publish_interval_s (2..86400 s), applied until the next reset; pushed on
# v1/devices/me/attributes and fetched once per connection with an attribute request.
# Firmware updates (OTA): the fw_* shared attributes, fetched with it, and the v2/fw/ topics go
# to firmware/ota.py, loaded only when they announce another firmware (or bootslot.py's record
# holds a result to report) and unloaded when done or when the session ends (an update in
# progress resumes from flash in the next one). What must not wait for room for it stays here:
# confirming a new firmware on trial once a reading is acknowledged.
#
# Messages are queued by the MQTT callback (which may run inside a publish) and handled by
# service() from the main loop. The queue is bounded; oversized packets never get this far
# (firmware/link.py refuses them before allocating). The supervisor loads this module once a
# session's CONNACK is in, after a collection, and unloads it when the session ends, so that
# it is not resident while provisioning or during the TLS handshake. (Importing it only when a
# message arrives was tried: on a heap fragmented by days of running, and by TLS buffers on
# the Unix port, that import can fail; a failed import at connect is a failed connect, retried
# after the backoff.)

import json

from micropython import const

from firmware import credentials, unload, version
from firmware.link import LinkError

_RPC_FILTER = const(b"v1/devices/me/rpc/request/+")
_ATTR_TOPIC = const(b"v1/devices/me/attributes")
_ATTR_REQUEST = const(b"v1/devices/me/attributes/request/1")
_ATTR_RESPONSE = const(b"v1/devices/me/attributes/response/1")
_RPC_PREFIX = const(b"v1/devices/me/rpc/request/")
_RPC_REPLY = const("v1/devices/me/rpc/response/%s")
_INTERVAL_KEY = const("publish_interval_s")
_INBOX = const(4)
_ACTED = const("rpc")  # record: {"rid": "<request id>", "method": "reboot" | "reprovision"}
_ACTING = const(("reboot", "reprovision"))
_REPEAT_MS = const(60000)  # redeliveries come in the burst after SUBSCRIBE: generous
_SHARED_KEYS = const(b'{"sharedKeys":"publish_interval_s,fw_title,fw_version,fw_size,fw_checksum,'
                     b'fw_checksum_algorithm"}')
_FW_VERSION = const("fw_version")
_FW_TOPICS = const(b"v2/fw/")


class Remote:
    def __init__(self, log, store=None):
        self._log = log
        self._store = store
        self.queue = []  # (topic, msg) from the MQTT callback, for service()
        self.dropped = 0
        # (request id, method) last acted on; None: none; False: not read yet. The supervisor
        # keeps it between sessions (this module is loaded for each session only).
        self._acted = False
        self._since = None  # ticks_ms of this session's first service(), or of the last action
        self.ota = None  # firmware/ota.py's Ota while an update needs it
        self._check = False  # bootslot.py's record, to look at once a reading is acknowledged

    def on_connect(self, link):
        """Subscribe and ask for the current shared attribute. False when refused."""
        self._since = None
        # Whatever a closed session left unread is stale: ThingsBoard sends unanswered RPCs
        # again after the SUBSCRIBE, and the shared attribute is fetched again below.
        self.queue.clear()
        if not link.subscribe(_RPC_FILTER, 1) or not link.subscribe(_ATTR_TOPIC, 1):
            self._log.warn("remote", "the server refused a subscription")
            return False
        if self.ota is not None:
            self.ota.on_connect()
        self._check = self._store is not None
        link.publish(_ATTR_REQUEST, _SHARED_KEYS, 0)
        return True

    def on_message(self, topic, msg):
        # MQTT callback: may run in the middle of a publish. Queue only.
        if len(self.queue) >= _INBOX:
            self.dropped += 1
            return
        self.queue.append((bytes(topic), msg))

    def service(self, meter, link):
        hal = meter.hal
        now = hal.ticks_ms()
        if self._acted is False:  # once per boot: what the boot before acted on
            rec = self._store.read(_ACTED) if self._store is not None else None
            self._acted = (rec["rid"], rec["method"]) if isinstance(rec, dict) and \
                isinstance(rec.get("rid"), str) and rec.get("method") in _ACTING else None
        if self._since is None:
            self._since = now
        elif self._acted is not None and hal.ticks_diff(now, self._since) >= _REPEAT_MS:
            # The window after the session that followed the action is over: from now on the
            # same request id is a new request (ThingsBoard restarted), not a resend.
            self._acted = None
            self._store.remove(_ACTED)
        if self.dropped:
            self._log.warn("remote", "%d messages dropped: more than %d waiting", self.dropped, _INBOX)
            self.dropped = 0
        if self._check and meter.pipeline.published:
            # A reading acknowledged in the run state: a new firmware on trial has proved
            # itself (bootslot.py). Confirmed here, in code every session loads: its first
            # boots must not depend on room for firmware/ota.py, which reports the result.
            self._check = False
            rec = self._store.read("bootslot")
            if isinstance(rec, dict) and "tries" in rec and rec.get("version") == version.VERSION:
                rec = {"run": rec.get("run"), "done": version.VERSION}
                self._store.write("bootslot", rec)
                self._log.info("remote", "firmware %s confirmed", version.VERSION)
            elif isinstance(rec, dict) and "n" in rec:
                # Started after failed starts (bootslot.py counts them; it gives a slot up
                # after a few in a row): this start worked, the count begins again.
                rec.pop("n")
                rec.pop("why", None)
                self._store.write("bootslot", rec)
            if isinstance(rec, dict) and ("done" in rec or "reason" in rec):
                self.firmware(meter)  # UPDATED, or FAILED after a rollback
        while self.queue and link.connected:  # a reprovision closes the session
            topic, msg = self.queue.pop(0)
            handle(meter, link, self._log, topic, msg, self)
        if self.ota is not None and link.connected and self.ota.service(meter, link):
            self.ota = None
            unload("ota")

    def firmware(self, meter, obj=None):
        """firmware/ota.py's Ota, loaded if need be and given the shared attributes obj if
        any; None when the heap has no room for it (the next connection's announcement tries
        again)."""
        try:
            if self.ota is None and self._store is not None:
                import gc
                gc.collect()  # the room garbage holds, before the import needs it
                from firmware.ota import Ota
                self.ota = Ota(self._store, self._log, meter.hal)
            if self.ota is not None and obj is not None:
                # Starting or resuming a download reads the package on flash back: on a heap
                # in pieces right after a connect that can fail as the import can (seen in
                # tests/e2e/test_e2e_ota.py's power cuts, 4 to 7 % of resumes). What is on flash
                # stays; the next session resumes from it.
                self.ota.update(obj)
        except MemoryError:
            self.ota = None
            unload("ota", "ota_check")
            self._log.warn("remote", "no room for the firmware update now")
        return self.ota


def _parse(msg):
    try:
        return json.loads(msg)
    except Exception:  # ValueError, UnicodeError, MemoryError on absurd nesting
        return None


def handle(meter, link, log, topic, msg, remote=None):
    if topic.startswith(_RPC_PREFIX):
        _rpc(meter, link, log, topic[len(_RPC_PREFIX):], msg, remote)
    elif topic == _ATTR_TOPIC:
        _shared(meter, log, _parse(msg), "pushed by the platform")
    elif topic == _ATTR_RESPONSE:
        # {"shared": {...}}; a section with nothing in it is omitted, {} is "nothing set"
        body = _parse(msg)
        _shared(meter, log, body.get("shared", {}) if isinstance(body, dict) else body,
                "fetched at connect")
    elif topic.startswith(_FW_TOPICS) and meter.remote.ota is not None:
        meter.remote.ota.on_message(topic, msg)
    else:
        log.warn("remote", "message on unexpected topic ignored")


def status(meter):
    """The meter's state for the status RPC: never a secret."""
    pipeline = meter.pipeline
    pulses = pipeline.pulses
    return {"state": meter.state, "current_fw_title": version.TITLE,
            "current_fw_version": version.VERSION,
            "pulses": pulses.index, "energy_kwh": pulses.energy_text(),
            "power_w": pulses.power_w, "uptime_s": pipeline.uptime_s(),
            "heap_free": meter.hal.mem_free(), "backlog": len(pipeline.queue),
            "credentials": credentials.describe(meter.creds), "published": pipeline.published,
            "missed_edges": pulses.missed_edges, "bounced_edges": pulses.bounced_edges,
            "rejected_edges": pulses.rejected,
            "last_error": meter.log.last_error}


# --- RPC -------------------------------------------------------------------------------------

def _rpc(meter, link, log, rid, msg, remote):
    if not (0 < len(rid) <= 10 and rid.isdigit()):
        log.warn("remote", "RPC with a malformed request id ignored")
        return
    req = _parse(msg)
    method = req.get("method") if isinstance(req, dict) else None
    if not isinstance(method, str):
        log.warn("remote", "RPC %s: not a JSON object with a method; answered with an error",
                 rid.decode())
        _reply(link, rid, {"error": "bad request"})
        return
    log.info("remote", "RPC %s: %s", rid.decode(), method[:32])
    if method == "status":
        _reply(link, rid, status(meter))
    elif method in _ACTING:
        if remote is not None:
            hal = meter.hal
            now = hal.ticks_ms()
            key = (rid.decode(), method)
            if remote._acted == key and hal.ticks_diff(now, remote._since) < _REPEAT_MS:
                # Acted on, in this session or the one before, within the window: a resend.
                log.warn("remote", "RPC %s: %s already done (a resend); not again", key[0],
                         method)
                _reply(link, rid, {"result": "already done"})
                return
            if remote._store is not None:  # on flash before acting
                remote._store.write(_ACTED, {"rid": key[0], "method": method})
            remote._acted = key
            remote._since = now  # the window runs from the action, and again from the next session
        try:
            _reply(link, rid, {"result": "rebooting" if method == "reboot" else "reprovisioning"})
        except LinkError:
            pass  # acted on all the same: the resend on the next session gets "already done"
        if method == "reboot":
            meter.reboot("RPC reboot")
        else:
            meter.request_reprovision("RPC reprovision")
    else:
        _reply(link, rid, {"error": "unknown method"})


def _reply(link, rid, obj):
    link.publish((_RPC_REPLY % rid.decode()).encode(), json.dumps(obj).encode(), 1)


# --- shared attributes ---------------------------------------------------------------------------

def _shared(meter, log, obj, what):
    if not isinstance(obj, dict):
        log.warn("remote", "shared attributes %s: not a JSON object; ignored", what)
        return
    ver = obj.get(_FW_VERSION)
    if meter.remote.ota is not None or ver is not None and ver != version.VERSION:
        meter.remote.firmware(meter, obj)  # another firmware announced (firmware/ota.py)
    if _INTERVAL_KEY not in obj:
        return  # other shared attributes are not the meter's business
    v = obj[_INTERVAL_KEY]
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 86400:
        log.warn("remote", "shared attribute %s must be an integer 2..86400; ignored",
                 _INTERVAL_KEY)
        return
    pipeline = meter.pipeline
    if v != pipeline.interval_s:
        log.info("remote", "publish interval %d s (shared attribute, %s)", v, what)
        pipeline.set_interval(v)
