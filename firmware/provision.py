# ThingsBoard device provisioning over MQTT (docs/thingsboard.md §2).
#
# The exchange: CONNECT with client id and username "provision" (a provision-only session,
# password ignored), SUBSCRIBE /provision/response without waiting for the SUBACK, PUBLISH the
# request to /provision/request (not "/provision", as some docs say: that topic gets the
# connection closed with no reply), wait for one reply, DISCONNECT.
# - The reply is accepted whether the SUBSCRIBE was granted (>= 3.9), refused with 0x80
#   (3.5-3.8) or ignored (<= 3.4): the platform writes it to the requesting connection anyway,
#   at QoS 1 when nothing matched (§2.1, §2.7).
# - The request goes at QoS 0: the reply confirms it, and no PUBACK has to be told apart from
#   the SUBACK that may or may not come (firmware/link.py handles either in any order).
# - Never a JSON null: the platform answers null values by closing the connection silently
#   (§2.2). Only keys with values are sent.

import json

from micropython import const

from firmware import credentials
from firmware.link import LinkError
from firmware.log import mask
from firmware.states import KEEP_WORKING, NEW_CREDENTIALS, NO_DECISION, REFUSED, TRY_TOKEN

_REQUEST_TOPIC = const(b"/provision/request")
_RESPONSE_TOPIC = const(b"/provision/response")
_PROVISION = const("provision")
_REPLY_TIMEOUT_MS = const(10000)  # README: deadlines; the watchdog is fed as the wait starts
_GESTURE_FALLBACK_TRIES = const(3)

# Outcomes
SUCCESS = "SUCCESS"
NOT_FOUND = "NOT_FOUND"  # wrong key/secret, or provisioning disabled on the profile
FAILURE = "FAILURE"  # name exists, token taken, device limit: the platform never says which
NO_REPLY = "NO_REPLY"  # refused, closed, timed out, unreachable: try again later
BAD_REPLY = "BAD_REPLY"  # a reply we cannot use (unknown status, unsupported credentials)


def build_request(key, secret, device_name, token=None):
    req = {"provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": device_name}
    if token:
        # Device-supplied credentials (§2.4): lets a meter that lost its token prove it is
        # the device when the name already exists (FAILURE, then CONNECT with this token).
        req["credentialsType"] = "ACCESS_TOKEN"
        req["token"] = token
    return json.dumps(req).encode()


def parse_reply(payload):
    """Returns (outcome, credentials or None, detail for the log): firmware/reply.py's rules.
    That module is loaded for the check only, once the exchange's socket is closed, and
    unloaded after it: importing it with this module made provisioning the heap's high point
    (a fragmented 110 KB heap then failed the import)."""
    from firmware import unload
    try:
        from firmware import reply
        return reply.parse(payload)
    except MemoryError:  # on a heap too fragmented for the module or the reply: try again later
        return BAD_REPLY, None, "provision reply of %d bytes: no memory to check it" % len(payload)
    finally:
        unload("reply")


class Provisioner:
    def __init__(self, link, log):
        self._link = link
        self._log = log
        self._reply = None

    def _on_message(self, topic, msg):
        if topic == _RESPONSE_TOPIC and self._reply is None:
            self._reply = msg

    def run(self, host, port, tls, request, keepalive_s):
        """One provisioning exchange. Returns (outcome, credentials or None, detail)."""
        link = self._link
        self._reply = None
        link.on_message = self._on_message
        try:
            rc = link.open(host, port, _PROVISION, _PROVISION, "", keepalive_s, tls)
            if rc != 0:
                return NO_REPLY, None, "provision session refused with CONNACK %d" % rc
            link.subscribe_nowait(_RESPONSE_TOPIC, 1)
            link.publish(_REQUEST_TOPIC, request, 0)
            if not link.wait(_REPLY_TIMEOUT_MS, self._has_reply):
                return NO_REPLY, None, "no provision reply within %d s" % (_REPLY_TIMEOUT_MS // 1000)
        except LinkError as e:  # whatever the server did: the link turns it all into LinkError
            return NO_REPLY, None, "provision exchange failed: %s" % (e,)
        finally:
            link.on_message = None
            link.close()  # the server would close it 60 s after the reply; don't wait for that
        return parse_reply(self._reply)

    def _has_reply(self):
        return self._reply is not None


# --- one attempt, and what it means --------------------------------------------------------
# Kept here, not in the supervisor, so that this code is in RAM only while a meter provisions:
# most boots never do (the supervisor unloads the module when it reaches the run state). The
# supervisor applies the decision: this module changes nothing of the supervisor's.



def attempt(link, cfg, device_name, tls, log, working, tries, token_tried, creds):
    """One provisioning exchange. Returns (decision, credentials or None).

    working: this is a requested re-provisioning (gesture, RPC) of a meter whose credentials
    work; tries: such attempts that got no answer so far; token_tried: the configured device
    token was already tried after a FAILURE; creds: the stored credentials, unless refused."""
    old = creds
    log.info("provision", "requesting credentials for %s from %s:%d (key %s)", device_name,
             cfg["tb_host"], cfg["tb_port"], mask(cfg["provision_key"]))
    req = build_request(cfg["provision_key"], cfg["provision_secret"], device_name,
                        cfg["access_token"])
    outcome, creds, detail = Provisioner(link, log).run(cfg["tb_host"], cfg["tb_port"], tls,
                                                        req, cfg["keepalive_s"])
    if outcome == SUCCESS:
        # The supervisor stores them before use: a power cut after that finds the new
        # credentials; before it, the platform holds a device whose token we never saw (§2.8),
        # which the device-supplied token (if configured) or an administrator recovers.
        log.info("provision", "SUCCESS: %s credentials stored", credentials.describe(creds))
        if old is not None:
            # Working credentials are never stranded: kept beside the issued ones until a
            # CONNACK 0 proves these (the supervisor's refusal path falls back to them).
            old = {k: old[k] for k in old if k != "working"}
            if old != creds:
                # A record's values are text, and this one record beside them.
                creds["working"] = old  # pyright: ignore[reportArgumentType, reportIndexIssue]
        return NEW_CREDENTIALS, creds
    if outcome in (NOT_FOUND, FAILURE):
        log.error("provision", "%s: %s%s", outcome, detail,
                  " (a device named %s exists, or the token is taken)" % device_name
                  if outcome == FAILURE else " (check provision_key/provision_secret; is "
                  "provisioning enabled on the device profile?)")
        if outcome == FAILURE and cfg["access_token"] and not token_tried:
            log.info("provision", "trying the configured device token %s",
                     mask(cfg["access_token"]))
            return TRY_TOKEN, None
        if working:
            log.info("provision", "keeping the working credentials")
            return KEEP_WORKING, None
        return REFUSED, None
    # NO_REPLY / BAD_REPLY: the platform did not decide anything; try again soon.
    log.warn("provision", "%s: %s", outcome, detail)
    if working and tries + 1 >= _GESTURE_FALLBACK_TRIES:
        log.warn("provision", "giving up the requested re-provisioning for now; "
                              "keeping the working credentials")
        return KEEP_WORKING, None
    return NO_DECISION, None


def fail(status, creds, working, rejected, token_tried, log):  # (a name interned anyway: the HAL's)
    """After CONNACK status 2, 4 or 5 (the session is closed). Returns (decision, credentials to
    keep or None): KEEP_WORKING (connect again at once, with these if given), REFUSED (a
    refused device token with no way forward: retry slowly) or NO_DECISION (the stored
    credentials are refused: provision again after the backoff). creds: the ones refused;
    working: the credentials on flash; rejected: those were refused this boot already;
    token_tried: creds is the configured device token."""
    if token_tried:
        log.error("connect", "the configured device token was refused (CONNACK %d)", status)
        if working is not None and not rejected and creds != working:
            # After a requested re-provisioning: the stored credentials worked before it;
            # back to reporting with them now, not in retry_slow_s.
            log.warn("connect", "reconnecting with the working credentials")
            return KEEP_WORKING, None
        return REFUSED, None
    creds = creds.get("working")
    if credentials.valid(creds):
        # Just issued, and refused: the credentials that worked before are still here.
        log.error("connect", "the issued credentials were refused (CONNACK %d); "
                             "reconnecting with the working ones", status)
        return KEEP_WORKING, creds
    return NO_DECISION, None
