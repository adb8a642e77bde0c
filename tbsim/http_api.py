"""A small HTTP/1.1 JSON API on loopback, so tests and people can play ThingsBoard's administrator.

    GET    /api/devices                              all devices
    POST   /api/devices                              create a pre-provisioned device
    GET    /api/devices/<name>                       one device
    DELETE /api/devices/<name>                       delete (its sessions are closed, as TB does)
    GET    /api/devices/<name>/telemetry             [{"ts", "values"}, ...] in arrival order
    POST   /api/devices/<name>/attributes/shared     {key: value}: saved and pushed to the device
    DELETE /api/devices/<name>/attributes/shared?keys=a,b
    POST   /api/devices/<name>/rpc                   {"method", "params", "timeoutMs"?}: two-way RPC
    GET    /api/events?since=N[&kind=K]              {"events": [...], "next": M}

One request per connection (Connection: close); bodies are limited to 1 MiB, headers to 64 KiB.
"""
import asyncio
import json
import logging
from urllib.parse import parse_qs, unquote, urlsplit

from .store import ACCESS_TOKEN, MQTT_BASIC, CredentialsError

log = logging.getLogger("tbsim")

MAX_BODY = 1 << 20
MAX_HEADERS = 100
READ_TIMEOUT_S = 10
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error", 504: "Gateway Timeout"}


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class HttpApi:
    def __init__(self, sim):
        self.sim = sim

    async def handle(self, reader, writer):
        try:
            status, body = await asyncio.wait_for(self._request(reader), READ_TIMEOUT_S + 120)
        except HttpError as e:
            status, body = e.status, {"error": str(e)}
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                ValueError):
            status, body = 400, {"error": "malformed or incomplete HTTP request"}
        except Exception as e:                               # never let a request kill the server
            log.exception("HTTP API error")
            status, body = 500, {"error": f"internal error: {e}"}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode("ascii")
        try:
            writer.write(head + data)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except Exception:
            pass
        finally:
            writer.close()

    async def _request(self, reader):
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise HttpError(400, "bad request line")
        method, target = parts[0].upper(), parts[1]
        length = 0
        for _ in range(MAX_HEADERS):
            header = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        else:
            raise HttpError(400, "too many headers")
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, "body too large")
        raw = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT_S) if length else b""
        url = urlsplit(target)
        query = parse_qs(url.query)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        return await self._route(method, segments, query, raw)

    @staticmethod
    def _json(raw):
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except ValueError as e:
            raise HttpError(400, f"body is not JSON: {e}") from None

    async def _route(self, method, seg, query, raw):
        sim = self.sim
        if seg[:2] == ["api", "events"] and len(seg) == 2:
            if method != "GET":
                raise HttpError(405, "use GET")
            since = int(query.get("since", ["0"])[0])
            kind = query.get("kind", [None])[0]
            events, nxt = sim.store.events(kind, since)
            return 200, {"events": events, "next": nxt}
        if seg[:2] != ["api", "devices"]:
            raise HttpError(404, "unknown path")
        if len(seg) == 2:
            if method == "GET":
                return 200, sim.devices()
            if method == "POST":
                return 201, self._create(self._json(raw))
            raise HttpError(405, "use GET or POST")
        name = seg[2]
        if sim.store.get(name) is None:
            raise HttpError(404, f"device {name!r} not found")
        rest = seg[3:]
        if not rest:
            if method == "GET":
                return 200, sim.device(name)
            if method == "DELETE":
                sim._delete_device(name)
                return 200, {"deleted": name}
            raise HttpError(405, "use GET or DELETE")
        if rest == ["telemetry"] and method == "GET":
            return 200, sim.telemetry(name)
        if rest == ["attributes", "shared"]:
            if method == "POST":
                body = self._json(raw)
                if not isinstance(body, dict):
                    raise HttpError(400, "shared attributes must be a JSON object")
                sim._push_shared(name, body)
                return 200, sim.device(name)["sharedAttributes"]
            if method == "DELETE":
                keys = [k for k in ",".join(query.get("keys", [])).split(",") if k]
                sim._delete_shared(name, keys)
                return 200, sim.device(name)["sharedAttributes"]
        if rest == ["rpc"] and method == "POST":
            body = self._json(raw)
            if not isinstance(body, dict) or not isinstance(body.get("method"), str):
                raise HttpError(400, 'RPC body must be {"method": str, "params": any}')
            timeout_s = float(body.get("timeoutMs", 10000)) / 1000
            result = await sim._rpc(name, body["method"], body.get("params"), timeout_s)
            if result == {"error": "timeout"}:
                return 504, result
            return 200, result
        raise HttpError(404 if method in ("GET", "POST", "DELETE") else 405, "unknown path or method")

    def _create(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HttpError(400, 'body must be {"name": str, ...}')
        ctype = body.get("credentialsType", ACCESS_TOKEN)
        creds = body.get("credentials")
        if ctype == MQTT_BASIC and not isinstance(creds, dict):
            raise HttpError(400, "MQTT_BASIC credentials must be an object {clientId, userName, password}")
        if ctype == ACCESS_TOKEN and creds is not None and not isinstance(creds, str):
            raise HttpError(400, "ACCESS_TOKEN credentials must be a string")
        try:
            return self.sim.add_device(body["name"], body.get("profileKey"), token=creds if ctype != MQTT_BASIC else None,
                                       credentials_type=ctype, basic=creds if ctype == MQTT_BASIC else None,
                                       provision_state=body.get("provisionState"))
        except CredentialsError as e:
            raise HttpError(409, str(e)) from None
        except ValueError as e:
            status = 409 if "already exists" in str(e) else 400
            raise HttpError(status, str(e)) from None
