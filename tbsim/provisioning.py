"""Device provisioning over MQTT: request parsing and ThingsBoard's decision logic
(docs/thingsboard.md §2.2-§2.6).

Two ways a request fails without any reply, and the difference is visible on the wire for QoS 1:
  * ParseFailure(puback=False): TB's AdaptorException path (payload is not a JSON object, or a field is
    an array of other than one element): the connection is closed, no PUBACK;
  * ParseFailure(puback=True): TB's RuntimeException path (missing provisionDeviceKey/Secret, a null or
    object value, an unknown credentialsType): PUBACK first, then close.
"""
from . import tbjson
from .store import (ACCESS_TOKEN, ALLOW_CREATE, CHECK_PRE_PROVISIONED, MQTT_BASIC, X509_CERTIFICATE,
                    CredentialsError, random_alnum)

CREDENTIALS_TYPES = ("ACCESS_TOKEN", "X509_CERTIFICATE", "MQTT_BASIC", "LWM2M_CREDENTIALS")

NOT_FOUND_REPLY = '{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}'
FAILURE_REPLY = '{"errorMsg":"Failed to provision device!","status":"FAILURE"}'


class ParseFailure(Exception):
    def __init__(self, message, puback):
        super().__init__(message)
        self.puback = puback


def _field(obj, name, required=False):
    """JsonConverter.getStrValue: missing optional -> "", missing required -> RuntimeException."""
    if name not in obj:
        if required:
            raise ParseFailure(f"Failed to find the field {name}", puback=True)
        return ""
    try:
        return tbjson.as_string(obj[name])
    except tbjson.Crash as e:
        raise ParseFailure(f"{name}: {e}", puback=True) from None
    except tbjson.Invalid as e:
        raise ParseFailure(f"{name}: {e}", puback=False) from None


def _bool(value):
    """JsonPrimitive.getAsBoolean: a boolean, else Boolean.parseBoolean(getAsString())."""
    if isinstance(value, bool):
        return value
    return tbjson.as_string(value).lower() == "true"


def parse_request(payload):
    """The request fields, all strings (plus gateway: bool), in TB's evaluation order."""
    try:
        root = tbjson.parse(payload.decode("utf-8", "replace"))
    except tbjson.Invalid as e:
        raise ParseFailure(f"not JSON: {e}", puback=False) from None
    if not isinstance(root, dict):
        raise ParseFailure("provision request is not a JSON object", puback=False)
    req = {"deviceName": _field(root, "deviceName")}
    if "credentialsType" in root:
        ctype = _field(root, "credentialsType")
        if ctype not in CREDENTIALS_TYPES:
            # CredentialsType.valueOf throws IllegalArgumentException: a RuntimeException.
            raise ParseFailure(f"No enum constant {ctype!r}", puback=True)
        req["credentialsType"] = ctype
    else:
        req["credentialsType"] = ACCESS_TOKEN
    for name in ("token", "clientId", "username", "password", "hash"):
        req[name] = _field(root, name)
    req["provisionDeviceKey"] = _field(root, "provisionDeviceKey", required=True)
    req["provisionDeviceSecret"] = _field(root, "provisionDeviceSecret", required=True)
    gateway = False
    if "gateway" in root:
        try:
            gateway = _bool(root["gateway"])
        except tbjson.Crash as e:
            raise ParseFailure(f"gateway: {e}", puback=True) from None
        except tbjson.Invalid as e:
            raise ParseFailure(f"gateway: {e}", puback=False) from None
    req["gateway"] = gateway
    return req


def _java_trim(s):
    """String.trim(): strips code points <= U+0020 only (not all Unicode whitespace)."""
    start, end = 0, len(s)
    while start < end and ord(s[start]) <= 32:
        start += 1
    while end > start and ord(s[end - 1]) <= 32:
        end -= 1
    return s[start:end]


def success_reply(device):
    ctype, creds = device.credentials_type, device.credentials
    value = dict(creds) if ctype == MQTT_BASIC else creds
    return tbjson.to_json({"credentialsValue": value, "credentialsType": ctype, "status": "SUCCESS"})


def _requested_credentials(req):
    """(type, value) the device asked for, or None when every credential field is empty (§2.4)."""
    if not any(req[k] for k in ("token", "hash", "username", "password", "clientId")):
        return None
    ctype = req["credentialsType"]
    if ctype == ACCESS_TOKEN:
        return ctype, req["token"]
    if ctype == MQTT_BASIC:
        return ctype, {"clientId": req["clientId"], "userName": req["username"], "password": req["password"]}
    if ctype == X509_CERTIFICATE:
        return ctype, req["hash"].strip()
    raise CredentialsError(f"{ctype} is not supported by tbsim")


def _issued_not_stored(req, name):
    """The "success-then-refuse" fault mode: SUCCESS with credentials that no CONNECT will accept
    (nothing is stored), so a client that trusts SUCCESS blindly loops. Not ThingsBoard: a broken
    or hostile server, for storm tests."""
    requested = _requested_credentials(req) if req["credentialsType"] in (ACCESS_TOKEN, MQTT_BASIC) else None
    ctype, value = requested or (ACCESS_TOKEN, random_alnum(20))
    body = {"credentialsValue": value, "credentialsType": ctype, "status": "SUCCESS"}
    return "SUCCESS", tbjson.to_json(body), name or random_alnum(20)


def provision(store, req, refuse_issued=False):
    """Run DeviceProvisionServiceImpl.provisionDevice; returns (status, reply_json, device_name).

    The one provisioning core of tbsim: MQTT, HTTP and CoAP requests all end here."""
    name = req["deviceName"]
    if name and not _java_trim(name):
        return "FAILURE", FAILURE_REPLY, None
    key, secret = req["provisionDeviceKey"], req["provisionDeviceSecret"]
    if not key or not secret:
        return "NOT_FOUND", NOT_FOUND_REPLY, None
    with store.lock:
        profile = store.profiles.get(key)
        if profile is None or profile.secret != secret:
            # A wrong secret is NOT_FOUND, not FAILURE (§2.3).
            return "NOT_FOUND", NOT_FOUND_REPLY, None
        name = _java_trim(name)
        if refuse_issued:
            return _issued_not_stored(req, name)
        if profile.strategy == ALLOW_CREATE:
            if not name:
                name = random_alnum(20)
            if name in store.devices:
                return "FAILURE", FAILURE_REPLY, name
            try:
                requested = _requested_credentials(req)
                if requested is None:
                    device = store.add_device(name, key, gateway=req["gateway"])
                else:
                    # saveDevice(ProvisionRequest) is @Transactional: a credentials conflict rolls the
                    # whole device back, so the name stays free (add_device is all-or-nothing too).
                    device = store.add_device(name, key, requested[0], requested[1], gateway=req["gateway"])
            except (CredentialsError, ValueError):
                return "FAILURE", FAILURE_REPLY, name
            device.server_attributes["provisionState"] = "provisioned"
            return "SUCCESS", success_reply(device), name
        if profile.strategy == CHECK_PRE_PROVISIONED:
            device = store.devices.get(name)
            if device is None or device.profile_key != key:
                return "FAILURE", FAILURE_REPLY, name or None
            if "provisionState" in device.server_attributes:
                # "provisioned" means already done; any other value also fails (§2.3 step 5).
                return "FAILURE", FAILURE_REPLY, name
            device.server_attributes["provisionState"] = "provisioned"
            return "SUCCESS", success_reply(device), name
    return "NOT_FOUND", NOT_FOUND_REPLY, None
