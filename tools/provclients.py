"""One provisioning request to ThingsBoard over HTTP, CoAP or MQTT, and what came back.

Each function sends one request (a dict in ThingsBoard's field names) and returns an Answer; none
raises for anything the server or the network does. Every exchange has one overall deadline, not
one per read, and every reply is read with a size limit before it is parsed.

ThingsBoard's answers, per transport (docs/bench-provisioning.md has the source files):
  HTTP  POST /api/v1/provision: 200 for SUCCESS, NOT_FOUND and FAILURE alike (the status is in the
        JSON); 500 with the error handler's JSON for a request it could not read; 400 for an empty one.
  CoAP  POST coap://host:5683/api/v1/provision: 2.01 SUCCESS, 4.00 NOT_FOUND/FAILURE (JSON) or an
        unreadable request (empty), 5.00 for an internal error; possibly as a separate response.
  MQTT  CONNECT as "provision", PUBLISH /provision/request, the reply on /provision/response (QoS 1
        even unsubscribed); a malformed request gets the connection closed with no reply.
"""
import asyncio
import json
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.request

MAX_REPLY = 64 * 1024          # ThingsBoard's replies are a few hundred bytes; refuse anything huge


class Answer:
    """What one request produced.

    kind: "reply" (a provisioning reply was parsed: see status), "http" / "coap" (an error code with
    no provisioning reply), "timeout", "refused" (connection refused, DNS, TLS...), "closed" (the
    server hung up without a reply), "connack" (MQTT CONNECT refused), "bad-reply" (not a reply).
    """

    def __init__(self, kind, detail="", status=None, reply=None, code=None):
        self.kind = kind
        self.detail = detail
        self.status = status            # SUCCESS / NOT_FOUND / FAILURE for kind "reply"
        self.reply = reply              # the parsed JSON object
        self.code = code                # HTTP status, CoAP code text, CONNACK code

    def __repr__(self):
        return "Answer(%s, %s, %r)" % (self.kind, self.status or self.code, self.detail)


def parse_reply(raw, code=None):
    """A provisioning reply from its bytes, or a bad-reply Answer naming what was wrong."""
    if len(raw) > MAX_REPLY:
        return Answer("bad-reply", "reply of %d bytes" % len(raw), code=code)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Answer("bad-reply", "reply is not JSON: %r" % raw[:80], code=code)
    if not isinstance(obj, dict) or obj.get("status") not in ("SUCCESS", "NOT_FOUND", "FAILURE"):
        return Answer("bad-reply", "reply has no known status: %r" % raw[:80], code=code)
    return Answer("reply", str(obj.get("errorMsg", "")), status=obj["status"], reply=obj, code=code)


# ---- HTTP ----------------------------------------------------------------------------------------

def via_http(request, host, port=None, tls=False, timeout=10.0, cafile=None):
    """urllib's timeout bounds each socket operation, not the exchange: the request runs in a
    worker thread and is abandoned (it is a daemon) when the overall deadline passes."""
    scheme = "https" if tls else "http"
    url = "%s://%s%s/api/v1/provision" % (scheme, host, ":%d" % port if port else "")
    box = []
    worker = threading.Thread(target=lambda: box.append(_http_exchange(request, url, tls, timeout, cafile)),
                              daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        return Answer("timeout", "no answer from %s within %g s" % (url, timeout))
    return box[0]


def _http_exchange(request, url, tls, timeout, cafile):
    data = json.dumps(request, separators=(",", ":")).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    context = ssl.create_default_context(cafile=cafile) if tls else None
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw = _read_limited(resp, deadline)
            return parse_reply(raw, code=resp.status)
    except urllib.error.HTTPError as e:
        raw = _read_limited(e, deadline, swallow=True)
        message = ""
        try:
            message = str(json.loads(raw.decode("utf-8")).get("message", ""))
        except (ValueError, AttributeError, UnicodeDecodeError):
            message = raw[:200].decode("utf-8", "replace")
        return Answer("http", message, code=e.code)
    except (socket.timeout, TimeoutError):
        return Answer("timeout", "no answer from %s within %g s" % (url, timeout))
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            return Answer("timeout", "no answer from %s within %g s" % (url, timeout))
        return Answer("refused", "%s: %s" % (url, e.reason))
    except (OSError, ValueError) as e:        # reset mid-reply, a bad status line...
        return Answer("closed", "%s: %s" % (url, e))


def _read_limited(resp, deadline, swallow=False):
    chunks, total = [], 0
    while total <= MAX_REPLY:
        if time.monotonic() > deadline:
            raise TimeoutError("overall deadline")
        try:
            chunk = resp.read(4096)
        except OSError:
            if swallow:
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# ---- CoAP ----------------------------------------------------------------------------------------

def via_coap(request, host, port=None, timeout=10.0):
    """aiocoap, on a loop of its own for this one request."""
    import aiocoap                      # only the CoAP path needs it (pinned in requirements.txt)
    port = port or 5683
    uri = "coap://%s:%d/api/v1/provision" % (host, port)
    payload = json.dumps(request, separators=(",", ":")).encode("utf-8")

    async def run():
        context = await aiocoap.Context.create_client_context()
        try:
            msg = aiocoap.Message(code=aiocoap.Code.POST, payload=payload, uri=uri)
            return await asyncio.wait_for(context.request(msg).response, timeout)
        finally:
            await context.shutdown()

    try:
        response = asyncio.run(run())
    except asyncio.TimeoutError:
        return Answer("timeout", "no answer from %s within %g s" % (uri, timeout))
    except Exception as e:              # aiocoap's network errors have no common base we can name
        if type(e).__name__ in ("ConRetransmitsExceeded", "RequestTimedOut"):
            return Answer("timeout", "no answer from %s within %g s" % (uri, timeout))
        return Answer("refused", "%s: %s" % (uri, e))
    code = str(response.code)                       # "4.00 Bad Request"
    if response.code == aiocoap.Code.CREATED or (response.code == aiocoap.Code.BAD_REQUEST and response.payload):
        answer = parse_reply(response.payload, code=code)
        if answer.kind == "reply":
            return answer
    return Answer("coap", response.payload[:200].decode("utf-8", "replace"), code=code)


# ---- MQTT (3.1.1, just what provisioning needs) ----------------------------------------------------

def _str16(text):
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _packet(first, body):
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(length) + body


class _Closed(Exception):
    pass


class _Reader:
    """Packets from a socket, every read bounded by the one deadline of the exchange."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.buf = sock, deadline, b""

    def _need(self, n):
        while len(self.buf) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise _Closed
            self.buf += chunk

    def packet(self):
        self._need(2)
        length, shift, i = 0, 0, 1
        while True:
            self._need(i + 1)
            byte = self.buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
            if i > 4:
                raise ValueError("bad remaining length")
        if length > MAX_REPLY:
            raise ValueError("packet of %d bytes" % length)     # checked before reading the body
        self._need(i + length)
        first, body = self.buf[0], self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return first, body


def via_mqtt(request, host, port=None, tls=False, timeout=10.0, cafile=None):
    port = port or (8883 if tls else 1883)
    where = "%s:%d" % (host, port)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (socket.timeout, TimeoutError):
        return Answer("timeout", "no answer from %s within %g s" % (where, timeout))
    except OSError as e:
        return Answer("refused", "%s: %s" % (where, e.strerror or e))
    try:
        if tls:
            # The handshake's reads are bounded by what is left of the one deadline.
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock = ssl.create_default_context(cafile=cafile).wrap_socket(sock, server_hostname=host)
        # Client id and username "provision": a provision-only session; clean session, 60 s keepalive.
        connect = _str16("MQTT") + bytes([4, 0x82]) + struct.pack("!H", 60) + _str16("provision") + _str16("provision")
        sock.sendall(_packet(0x10, connect))
        reader = _Reader(sock, deadline)
        first, body = reader.packet()
        if first >> 4 != 2 or len(body) < 2:
            return Answer("bad-reply", "expected CONNACK, got packet type %d" % (first >> 4))
        if body[1] != 0:
            return Answer("connack", "CONNACK %d" % body[1], code=body[1])
        sock.sendall(_packet(0x82, struct.pack("!H", 1) + _str16("/provision/response") + b"\x01"))
        payload = json.dumps(request, separators=(",", ":")).encode("utf-8")
        sock.sendall(_packet(0x32, _str16("/provision/request") + struct.pack("!H", 2) + payload))
        while True:
            first, body = reader.packet()
            kind = first >> 4
            if kind != 3:
                continue                 # SUBACK (or a refusal from an older ThingsBoard), PUBACK
            n = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + n].decode("utf-8", "replace")
            pos = 2 + n
            if (first >> 1) & 3:
                sock.sendall(_packet(0x40, body[pos:pos + 2]))        # PUBACK the reply
                pos += 2
            if topic == "/provision/response":
                answer = parse_reply(body[pos:])
                try:
                    sock.sendall(b"\xe0\x00")                        # DISCONNECT; TB would close in 60 s
                except OSError:
                    pass
                return answer
    except (TimeoutError, socket.timeout):
        return Answer("timeout", "no answer from %s within %g s" % (where, timeout))
    except _Closed:
        return Answer("closed", "%s closed the connection without a reply" % where)
    except ssl.SSLError as e:
        return Answer("refused", "%s: TLS: %s" % (where, e.reason or e))
    except (OSError, ValueError) as e:
        return Answer("closed", "%s: %s" % (where, e))
    finally:
        sock.close()


TRANSPORTS = {"http": via_http, "coap": via_coap, "mqtt": via_mqtt}
