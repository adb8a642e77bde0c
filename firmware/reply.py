# A provisioning reply from a server that may be broken or hostile, checked before anything of
# it is stored (README: provisioning rules). Loaded by firmware/provision.py for the check only.
#
# Anything but a well-formed SUCCESS, NOT_FOUND or FAILURE is BAD_REPLY. Credentials must be what
# an MQTT CONNECT can carry and ThingsBoard can issue; every rule is over the UTF-8 bytes, so
# that CPython (tools, tests) and MicroPython (the meter) give the same verdict
# (tests/portable/test_provision_reply.py, tests/unix/test_provision_on_unix_port.py).

import json

from micropython import const

SUCCESS = "SUCCESS"
NOT_FOUND = "NOT_FOUND"
FAILURE = "FAILURE"
BAD_REPLY = "BAD_REPLY"
_CREDENTIAL_MAX = const(255)  # bytes, as access_token in config.json
# The longest valid reply: MQTT_BASIC with three fields of 255 UTF-8 bytes, every character
# written as a \u escape (6 bytes for 2), and the keys: under 2.5 KB. Anything longer is refused
# before json.loads, which needs as much again in one piece of a heap that may not have it.
_REPLY_MAX = const(2560)


def _short(v):
    # Server text goes into a log line: cut short, and every byte outside printable ASCII
    # shown as \xNN, so that no server can write a line of its own (a newline) or a terminal
    # escape. Over the UTF-8 bytes: iterating a str makes one-character strings, which
    # MicroPython interns for good (main.py).
    if not isinstance(v, str):
        return "<%s>" % type(v).__name__
    try:
        raw = v.encode()
    except UnicodeError:  # a lone surrogate (CPython; MicroPython encodes it)
        return "<unencodable text>"
    out = bytearray()
    for b in raw[:60]:
        if 0x20 <= b < 0x7F:
            out.append(b)
        else:
            out.extend(b"\\x%02x" % b)
    return out.decode() + ("..." if len(raw) > 60 else "")


def _unusable(v, empty=False):
    # Why v cannot be a credential in an MQTT CONNECT, or None when it can. The same verdict
    # on CPython and MicroPython: every rule is over the UTF-8 bytes.
    if not isinstance(v, str):
        return "is not a string"
    try:
        raw = v.encode()
    except UnicodeError:
        return "is not valid text"
    if not raw:
        return None if empty else "is an empty string"
    if len(raw) > _CREDENTIAL_MAX:
        return "is longer than 255 bytes"
    prev = 0
    for b in raw:
        # U+0000 is forbidden in MQTT strings; no other control character (C0, DEL, C1:
        # C2 80..9F in UTF-8) can be typed into a token on the platform either.
        if b < 0x20 or b == 0x7F or (prev == 0xC2 and b < 0xA0):
            return "has control characters"
        if prev == 0xED and b >= 0xA0:  # U+D800..U+DFFF: a lone surrogate, not text
            return "is not valid text"
        prev = b
    if raw.count(b" ") == len(raw):
        return "is only spaces"
    if raw == b"provision":
        # A CONNECT with client id or username "provision" is a provisioning session (§1):
        # these credentials could never open a device session.
        return "is \"provision\""
    return None


def parse(payload):
    """Returns (outcome, credentials or None, detail for the log)."""
    outcome, got = _parse(payload)
    if outcome == SUCCESS:
        return SUCCESS, got, ""
    if outcome == BAD_REPLY:
        return BAD_REPLY, None, "provision reply: %s" % got
    return outcome, None, got  # NOT_FOUND, FAILURE: the platform's errorMsg, shortened


def _parse(payload):
    # (outcome, credentials) or (outcome, why).
    if len(payload) > _REPLY_MAX:
        return BAD_REPLY, "%d bytes, more than any valid reply" % len(payload)
    try:
        msg = json.loads(payload)
    except MemoryError:  # absurd nesting, or a heap too fragmented for the reply
        return BAD_REPLY, "%d bytes, no memory to parse them" % len(payload)
    except Exception:  # ValueError, UnicodeError
        return BAD_REPLY, "not valid JSON"
    if not isinstance(msg, dict):
        return BAD_REPLY, "not a JSON object"
    # An escaped UTF-16 surrogate (\\uD800..\\uDFFF): CPython's json joins a pair into one
    # character, MicroPython's makes two invalid 3-byte sequences of it, which no server would
    # take for what it sent. Refused, so that both give the same verdict. (Found without a
    # copy of the payload: the heap may have no room for one.)
    i = payload.find(b"\\u")
    while 0 <= i < len(payload) - 3:
        if payload[i + 2] | 0x20 == 0x64 and (payload[i + 3] | 0x20) in b"89abcdef":
            return BAD_REPLY, "text written as \\u escapes of UTF-16 surrogates"
        i = payload.find(b"\\u", i + 2)
    status = msg.get("status")
    if status in (NOT_FOUND, FAILURE):
        return status, _short(msg.get("errorMsg"))
    if status != SUCCESS:
        return BAD_REPLY, "unknown status " + _short(status)
    return _credentials(msg.get("credentialsType"), msg.get("credentialsValue"))


def _credentials(ctype, value):
    # Functions kept short: importing one needs its bytecode in one piece of the heap.
    if ctype == "ACCESS_TOKEN":
        why = _unusable(value)
        if why:
            return BAD_REPLY, "credentialsValue (the token) " + why
        return SUCCESS, {"type": ctype, "token": value}
    if ctype != "MQTT_BASIC":
        return BAD_REPLY, "unusable credentials (type %s)" % _short(ctype)
    # Every field present and a string (§2.5); the platform never issues a client id with a
    # password but no username, nor neither id nor username (§2.4).
    if not isinstance(value, dict):
        return BAD_REPLY, "MQTT_BASIC credentialsValue is not an object"
    creds = {"type": ctype}
    for key in ("clientId", "userName", "password"):
        why = _unusable(value[key], True) if key in value else "is not in it"
        if why:
            return BAD_REPLY, "MQTT_BASIC %s %s" % (key, why)
        creds[key] = value[key]
    if not (creds["clientId"] or creds["userName"]):
        why = "clientId and userName both empty"
    elif creds["password"] and not creds["userName"]:
        why = "password without userName"
    else:
        return SUCCESS, creds
    return BAD_REPLY, "MQTT_BASIC " + why
