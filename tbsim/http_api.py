"""The HTTP port: ThingsBoard's HTTP device API (the part a meter's tooling uses) and a small JSON
admin API, so tests and people can play ThingsBoard's administrator.

Device API, as ThingsBoard's DeviceApiController answers (thingsboard/thingsboard :
common/transport/http/src/main/java/org/thingsboard/server/transport/http/DeviceApiController.java):
    POST   /api/v1/provision                         provisioning (the shared core)
    POST   /api/v1/<token>/telemetry                 200 empty once accepted, 401 unknown token
    POST   /api/v1/<token>/attributes                client attributes, same answers

Admin API (tbsim's own, JSON):
    GET    /api/devices                              all devices
    POST   /api/devices                              create a pre-provisioned device
    GET    /api/devices/<name>                       one device
    DELETE /api/devices/<name>                       delete (its sessions are closed, as TB does)
    GET    /api/devices/<name>/telemetry             [{"ts", "values"}, ...] in arrival order
    POST   /api/devices/<name>/attributes/shared     {key: value}: saved and pushed to the device
    DELETE /api/devices/<name>/attributes/shared?keys=a,b
    POST   /api/devices/<name>/rpc                   {"method", "params", "timeoutMs"?}: two-way RPC
    GET    /api/events?since=N[&kind=K]              {"events": [...], "next": M}
    GET    /api/profiles, POST /api/profiles         device profiles (provisioning, topic filters)
    POST   /api/profiles/<key>/ota                   {"firmwareId"?, "softwareId"?}: assign (null: unassign)
    POST   /api/devices/<name>/ota                   the same for one device
    POST   /api/otaPackages?title=&version=[&type=&checksumAlgorithm=&checksum=&tag=&url=]
                                                     body: the package file; 201 + package info
    GET    /api/otaPackages, GET|DELETE /api/otaPackages/<id>

One request per connection (Connection: close); bodies are limited to 1 MiB, headers to 64 KiB.
"""
import asyncio
import json
import logging
import time
from urllib.parse import parse_qs, unquote, urlsplit

from . import kvutils, ota, tbjson
from .provisioning import ParseFailure, parse_request
from .store import ACCESS_TOKEN, MQTT_BASIC, CredentialsError, Profile

log = logging.getLogger("tbsim")

MAX_BODY = 1 << 20
MAX_HEADERS = 100
READ_TIMEOUT_S = 10
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error",
           504: "Gateway Timeout"}


class Raw:
    """A reply that is not the admin API's JSON: the device API's bodies, as ThingsBoard sends them."""

    def __init__(self, status, body=b"", content_type=None):
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.content_type = content_type


def _tb_error(status, message, error_code):
    """ThingsboardErrorResponseHandler's JSON body for an exception the controller threw."""
    body = {"status": status, "message": message, "errorCode": error_code, "timestamp": int(time.time() * 1000)}
    return Raw(status, json.dumps(body, separators=(",", ":")), "application/json")


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class HttpApi:
    def __init__(self, sim):
        self.sim = sim

    async def handle(self, reader, writer):
        try:
            result = await asyncio.wait_for(self._request(reader), READ_TIMEOUT_S + 120)
        except HttpError as e:
            result = e.status, {"error": str(e)}
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                ValueError):
            result = 400, {"error": "malformed or incomplete HTTP request"}
        except Exception as e:                               # never let a request kill the server
            log.exception("HTTP API error")
            result = 500, {"error": f"internal error: {e}"}
        if isinstance(result, Raw):
            status, data, ctype = result.status, result.body, result.content_type
        else:
            status, body = result
            data, ctype = json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json"
        head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        head = (head + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode("ascii")
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
        if seg[:2] == ["api", "v1"]:
            return await self._device_api(method, seg[2:], raw)
        if seg[:2] == ["api", "profiles"]:
            return self._profiles(method, seg[2:], raw)
        if seg[:2] == ["api", "otaPackages"]:
            return self._ota_packages(method, seg[2:], query, raw)
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
        if rest == ["ota"] and method == "POST":
            return 200, self._assign(dict(device_name=name), raw) or sim.device(name)
        if rest == ["attributes", "shared"]:
            if method == "POST":
                # As TelemetryController.saveAttributes: typed by Jackson's node types, then KvUtils.
                try:
                    values = tbjson.rest_attribute_values(raw.decode("utf-8", "replace"))
                except ValueError as e:
                    raise HttpError(400, str(e)) from None
                bad = kvutils.first_invalid(values)
                if bad is not None:
                    raise HttpError(400, f"{bad[1]}: {bad[0]!r}")
                sim._push_shared(name, values)
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

    # ---- ThingsBoard's HTTP device API ----
    async def _device_api(self, method, seg, raw):
        sim = self.sim
        if seg == ["provision"]:
            if method != "POST":
                return _tb_error(405, f"Request method '{method}' is not supported", 2)
            if not raw:
                # @RequestBody String with no body: HttpMessageNotReadableException.
                return _tb_error(400, "Required request body is missing", 31)
            try:
                req = parse_request(raw)
            except ParseFailure as e:
                # Thrown inside the controller, before the async call: ERRH turns it into a 500.
                sim.store.event("provision", request=None, status=None, deviceName=None, error=str(e),
                                transport="http")
                return _tb_error(500, str(e), 2)
            if sim.provision_delay_s:
                await asyncio.sleep(sim.provision_delay_s)
            _status, reply, _name = sim._provision(req, "http")
            # All three statuses are 200 with the JSON text; Spring writes a String body as text/plain.
            return Raw(200, reply, "text/plain;charset=UTF-8")
        if len(seg) == 2 and seg[1] in ("telemetry", "attributes"):
            if method != "POST":
                return _tb_error(405, f"Request method '{method}' is not supported", 2)
            if not raw:
                return _tb_error(400, "Required request body is missing", 31)
            outcome = sim._device_post(seg[0], seg[1], raw, "http")
            return Raw({"ok": 200, "unauthorized": 401}.get(outcome, 500))
        return _tb_error(404, "No static resource api/v1/" + "/".join(seg) + ".", 2)

    # ---- profiles and OTA (tbsim's admin API) ----
    def _profiles(self, method, seg, raw):
        sim = self.sim
        if not seg:
            if method == "GET":
                with sim.store.lock:
                    return 200, [p.to_dict() for p in sim.store.profiles.values()]
            if method == "POST":
                body = self._json(raw)
                if not isinstance(body, dict) or not isinstance(body.get("key"), str) \
                        or not isinstance(body.get("secret"), str):
                    raise HttpError(400, 'body must be {"key": str, "secret": str, ...}')
                try:
                    profile = Profile.from_dict(body)
                except (ValueError, TypeError) as e:
                    raise HttpError(400, str(e)) from None
                old = sim.store.profiles.get(profile.key)
                if old is not None and "firmwareId" not in body and "softwareId" not in body:
                    profile.firmware_id, profile.software_id = old.firmware_id, old.software_id
                sim.add_profile(profile)
                return (200 if old else 201), profile.to_dict()
            raise HttpError(405, "use GET or POST")
        if len(seg) == 2 and seg[1] == "ota" and method == "POST":
            if seg[0] not in sim.store.profiles:
                raise HttpError(404, f"profile {seg[0]!r} not found")
            self._assign(dict(profile_key=seg[0]), raw)
            return 200, sim.store.profiles[seg[0]].to_dict()
        raise HttpError(404, "unknown path or method")

    def _assign(self, target, raw):
        body = self._json(raw)
        if not isinstance(body, dict) or not set(body) <= {"firmwareId", "softwareId"} or not body:
            raise HttpError(400, 'body must be {"firmwareId"?: id|null, "softwareId"?: id|null}')
        kw = {}
        if "firmwareId" in body:
            kw["firmware"] = body["firmwareId"]
        if "softwareId" in body:
            kw["software"] = body["softwareId"]
        try:
            self.sim._assign_ota(**target, **kw)
        except KeyError as e:
            raise HttpError(404, str(e).strip("'\"")) from None
        except ValueError as e:
            raise HttpError(400, str(e)) from None
        return None

    def _ota_packages(self, method, seg, query, raw):
        sim = self.sim

        def arg(name, default=None):
            return query.get(name, [default])[0]

        if not seg:
            if method == "GET":
                return 200, sim.ota_packages()
            if method == "POST":
                kw = dict(title=arg("title"), version=arg("version"), type=arg("type", ota.FIRMWARE),
                          checksum_algorithm=arg("checksumAlgorithm"), checksum_text=arg("checksum"),
                          tag=arg("tag"), file_name=arg("fileName"), content_type=arg("contentType"))
                if arg("url") is not None:
                    kw["url"] = arg("url")
                else:
                    kw["data"] = raw
                try:
                    return 201, sim._add_ota_package(**kw)
                except ValueError as e:
                    raise HttpError(400, str(e)) from None
            raise HttpError(405, "use GET or POST")
        package = sim.store.ota_packages.get(seg[0])
        if package is None or len(seg) != 1:
            raise HttpError(404, "OTA package not found")
        if method == "GET":
            return 200, package.info()
        if method == "DELETE":
            try:
                sim._delete_ota_package(seg[0])
            except ValueError as e:
                raise HttpError(409, str(e)) from None
            return 200, {"deleted": seg[0]}
        raise HttpError(405, "use GET or DELETE")

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
