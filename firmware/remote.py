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
# Shared attribute: publish_interval_s (2..86400 s), applied until the next reset; pushed on
# v1/devices/me/attributes and fetched once per connection with an attribute request.
#
# Messages are queued by the MQTT callback (which may run inside a publish) and handled by
# service() from the main loop. The queue is bounded; oversized packets never get this far
# (firmware/link.py refuses them before allocating). This module stays loaded: importing it
# only when a message arrives was tried, and on a heap fragmented by days of running (and by
# TLS buffers, on the Unix port) the import itself can fail.

import json

from micropython import const

from firmware import credentials, version

_RPC_FILTER = const(b"v1/devices/me/rpc/request/+")
_ATTR_TOPIC = const(b"v1/devices/me/attributes")
_ATTR_REQUEST = const(b"v1/devices/me/attributes/request/1")
_ATTR_RESPONSE = const(b"v1/devices/me/attributes/response/1")
_RPC_PREFIX = const(b"v1/devices/me/rpc/request/")
_RPC_REPLY = const("v1/devices/me/rpc/response/%s")
_INTERVAL_KEY = const("publish_interval_s")
_INBOX = const(4)


class Remote:
    def __init__(self, log):
        self._log = log
        self._inbox = []
        self.dropped = 0

    def on_connect(self, link):
        """Subscribe and ask for the current shared attribute. False when refused."""
        if not link.subscribe(_RPC_FILTER, 1) or not link.subscribe(_ATTR_TOPIC, 1):
            self._log.warn("remote", "the server refused a subscription")
            return False
        link.publish(_ATTR_REQUEST, b'{"sharedKeys":"publish_interval_s"}', 0)
        return True

    def on_message(self, topic, msg):
        # MQTT callback: may run in the middle of a publish. Queue only.
        if len(self._inbox) >= _INBOX:
            self.dropped += 1
            return
        self._inbox.append((bytes(topic), msg))

    def service(self, meter, link):
        if self.dropped:
            self._log.warn("remote", "%d messages dropped: more than %d waiting", self.dropped, _INBOX)
            self.dropped = 0
        while self._inbox:
            topic, msg = self._inbox.pop(0)
            handle(meter, link, self._log, topic, msg)


def _parse(msg):
    try:
        return json.loads(msg)
    except Exception:  # ValueError, UnicodeError, MemoryError on absurd nesting
        return None


def handle(meter, link, log, topic, msg):
    if topic.startswith(_RPC_PREFIX):
        _rpc(meter, link, log, topic[len(_RPC_PREFIX):], msg)
    elif topic == _ATTR_TOPIC:
        _shared(meter, log, _parse(msg), "pushed")
    elif topic == _ATTR_RESPONSE:
        # {"shared": {...}}; a section with nothing in it is omitted, {} is "nothing set"
        body = _parse(msg)
        _shared(meter, log, body.get("shared", {}) if isinstance(body, dict) else body, "fetched")
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

def _rpc(meter, link, log, rid, msg):
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
    elif method == "reboot":
        _reply(link, rid, {"result": "rebooting"})
        meter.reboot("RPC reboot")
    elif method == "reprovision":
        _reply(link, rid, {"result": "reprovisioning"})
        meter.request_reprovision("RPC reprovision")
    else:
        _reply(link, rid, {"error": "unknown method"})


def _reply(link, rid, body):
    link.publish((_RPC_REPLY % rid.decode()).encode(), json.dumps(body).encode(), 1)


# --- shared attributes ---------------------------------------------------------------------------

def _shared(meter, log, attrs, how):
    if not isinstance(attrs, dict):
        log.warn("remote", "shared attributes %s: not a JSON object; ignored", how)
        return
    if _INTERVAL_KEY not in attrs:
        return  # other shared attributes are not the meter's business
    v = attrs[_INTERVAL_KEY]
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 86400:
        log.warn("remote", "shared attribute %s must be an integer 2..86400; ignored",
                 _INTERVAL_KEY)
        return
    pipeline = meter.pipeline
    if v != pipeline.interval_s:
        log.info("remote", "publish interval %d s (shared attribute, %s)", v, how)
        pipeline.set_interval(v)
