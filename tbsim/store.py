"""What the simulated ThingsBoard remembers: profiles, devices, credentials, attributes, telemetry,
events. Thread-safe (one lock), because tests read it from their own thread while the server's
asyncio loop writes it. Optionally saved to / loaded from a JSON file.

Memory bounds: the event log is a ring of the last EVENTS_MAX events; each device keeps its last
TELEMETRY_MAX telemetry entries (telemetryCount still counts all of them).
"""
import collections
import hashlib
import json
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass

from . import topics
from .ota import Package

EVENTS_MAX = 100_000
TELEMETRY_MAX = 100_000

ACCESS_TOKEN, MQTT_BASIC, X509_CERTIFICATE = "ACCESS_TOKEN", "MQTT_BASIC", "X509_CERTIFICATE"
ALLOW_CREATE, CHECK_PRE_PROVISIONED = "allow-create", "check-pre-provisioned"

_ALNUM = string.ascii_letters + string.digits


def random_alnum(n=20):
    """StringUtils.randomAlphanumeric(20): TB's generated tokens and device names."""
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def sha3(*parts, sep="|"):
    """EncryptionUtil.getSha3Hash: hex SHA3-256 of the parts joined by '|'."""
    return hashlib.sha3_256(sep.join(parts).encode("utf-8")).hexdigest()


def mask(secret):
    """For logs and events, as the firmware masks (firmware/log.py mask; tbsim imports nothing
    from the firmware, so tests/unit/test_masking.py holds the two to one rule): the first and
    last two characters around "...", nothing of a secret shorter than 8 or of one whose four
    characters shown are not all printable ASCII."""
    if secret is None:
        return None
    secret = str(secret)
    shown = secret[:2] + "..." + secret[-2:]
    if len(secret) < 8 or not all(" " <= c <= "~" for c in shown):
        return "..."
    return shown


# The fields of a provision request that the "provision" event shows masked: the profile's
# key and secret, and the credentials a device asks for (docs/thingsboard.md §2.4).
PROVISION_SECRETS = ("provisionDeviceKey", "provisionDeviceSecret", "token", "password")


def _filter_or_default(text, default):
    """MqttDeviceProfileTransportConfiguration's getters: a blank filter reads as the default."""
    return text if isinstance(text, str) and text.strip() else default


DEFAULT_TELEMETRY_TOPIC = "v1/devices/me/telemetry"
DEFAULT_ATTRIBUTES_TOPIC = "v1/devices/me/attributes"


@dataclass
class Profile:
    """A device profile with provisioning enabled (provision key and secret), and its MQTT transport
    settings: the telemetry, attributes and attributes-subscribe topic filters (MQTT transport type
    when any differs from the default; MqttDeviceProfileTransportConfiguration)."""
    key: str
    secret: str
    strategy: str = ALLOW_CREATE
    puback_on_validation_failure: bool = False
    name: str = None
    telemetry_topic: str = DEFAULT_TELEMETRY_TOPIC
    attributes_topic: str = DEFAULT_ATTRIBUTES_TOPIC
    attributes_subscribe_topic: str = DEFAULT_ATTRIBUTES_TOPIC
    firmware_id: str = None          # OTA packages assigned to the profile (devices without their own)
    software_id: str = None

    def __post_init__(self):
        if self.strategy not in (ALLOW_CREATE, CHECK_PRE_PROVISIONED):
            raise ValueError(f"unknown provisioning strategy {self.strategy!r}")
        if self.name is None:
            self.name = self.key
        self.telemetry_topic = _filter_or_default(self.telemetry_topic, DEFAULT_TELEMETRY_TOPIC)
        self.attributes_topic = _filter_or_default(self.attributes_topic, DEFAULT_ATTRIBUTES_TOPIC)
        self.attributes_subscribe_topic = _filter_or_default(self.attributes_subscribe_topic,
                                                             DEFAULT_ATTRIBUTES_TOPIC)
        self.is_telemetry = topics.profile_filter(self.telemetry_topic)
        self.is_attributes = topics.profile_filter(self.attributes_topic)
        self.is_attributes_subscription = topics.profile_filter(self.attributes_subscribe_topic)

    def to_dict(self):
        return {"key": self.key, "secret": self.secret, "strategy": self.strategy,
                "pubackOnValidationFailure": self.puback_on_validation_failure, "name": self.name,
                "telemetryTopic": self.telemetry_topic, "attributesTopic": self.attributes_topic,
                "attributesSubscribeTopic": self.attributes_subscribe_topic,
                "firmwareId": self.firmware_id, "softwareId": self.software_id}

    @classmethod
    def from_dict(cls, d):
        return cls(d["key"], d["secret"], d.get("strategy", ALLOW_CREATE),
                   bool(d.get("pubackOnValidationFailure", False)), d.get("name"),
                   d.get("telemetryTopic"), d.get("attributesTopic"), d.get("attributesSubscribeTopic"),
                   d.get("firmwareId"), d.get("softwareId"))


class CredentialsError(ValueError):
    """Credentials rejected by TB's validator (duplicate id, empty fields...)."""


def credentials_id(ctype, value):
    """The globally unique credentials id TB derives (DeviceCredentialsServiceImpl)."""
    if ctype == ACCESS_TOKEN:
        if not value:
            raise CredentialsError("Device credentials id should be specified!")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise CredentialsError("Device credentials id contains control characters")
        return value
    if ctype == MQTT_BASIC:
        client_id, user = value.get("clientId") or "", value.get("userName") or ""
        if not client_id and not user:
            raise CredentialsError("Both mqtt client id and user name are empty!")
        if client_id and value.get("password") and not user:
            raise CredentialsError("Password cannot be specified along with client id")
        if not client_id:
            return user
        if not user:
            return sha3(client_id)
        return sha3(client_id, user)
    if ctype == X509_CERTIFICATE:
        if not value:
            raise CredentialsError("X509 certificate is empty")
        return sha3(value.strip())
    raise CredentialsError(f"unsupported credentials type {ctype}")


class Device:
    __slots__ = ("name", "profile_key", "credentials_type", "credentials", "client_attributes",
                 "shared_attributes", "server_attributes", "telemetry", "telemetry_count", "latest",
                 "latest_ts", "gateway", "rpc_seq", "firmware_id", "software_id")

    def __init__(self, name, profile_key, credentials_type, credentials):
        self.name = name
        self.profile_key = profile_key
        self.credentials_type = credentials_type
        self.credentials = credentials
        self.client_attributes = {}
        self.shared_attributes = {}
        self.server_attributes = {}
        self.telemetry = collections.deque(maxlen=TELEMETRY_MAX)
        self.telemetry_count = 0
        self.latest = {}
        self.latest_ts = {}
        self.gateway = False
        self.rpc_seq = 0          # DeviceActorMessageProcessor.rpcSeq: first server-side RPC id is 0
        self.firmware_id = None   # the device's own OTA packages (they win over the profile's)
        self.software_id = None


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.profiles = {}
        self.devices = {}
        self.ota_packages = {}          # id -> ota.Package
        self._by_cred = {}
        self._events = collections.deque(maxlen=EVENTS_MAX)
        self._events_base = 0           # index of self._events[0] in the never-ending event sequence

    # ---- events ----
    def event(self, kind, **details):
        entry = {"t": time.time(), "kind": kind, **details}
        with self.lock:
            if len(self._events) == self._events.maxlen:
                self._events_base += 1
            self._events.append(entry)
        return entry

    def events(self, kind=None, since=0):
        with self.lock:
            start = max(0, since - self._events_base)
            items = list(self._events)[start:]
            nxt = self._events_base + len(self._events)
        if kind is not None:
            items = [e for e in items if e["kind"] == kind]
        return items, nxt

    # ---- profiles and devices ----
    def add_profile(self, profile):
        with self.lock:
            self.profiles[profile.key] = profile

    def add_device(self, name, profile_key=None, credentials_type=ACCESS_TOKEN, credentials=None,
                   provision_state=None, gateway=False):
        """Create a device with its credentials atomically (a failure leaves nothing behind)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("device name must be a non-blank string")
        if len(name) > 255:
            raise ValueError("device name longer than 255 characters")
        if credentials_type == ACCESS_TOKEN and credentials is None:
            credentials = random_alnum(20)
        if credentials_type == MQTT_BASIC:
            # Kept as given: provisioning stores "" for absent fields, an admin may store null.
            credentials = {k: (credentials or {}).get(k) for k in ("clientId", "userName", "password")}
        cred_id = credentials_id(credentials_type, credentials)
        with self.lock:
            if name in self.devices:
                raise ValueError(f"Device with name {name!r} already exists")
            if cred_id in self._by_cred:
                raise CredentialsError("Device credentials are already assigned to another device!")
            if profile_key is not None and profile_key not in self.profiles:
                raise ValueError(f"unknown device profile {profile_key!r}")
            device = Device(name, profile_key, credentials_type, credentials)
            device.gateway = bool(gateway)
            if provision_state is not None:
                device.server_attributes["provisionState"] = provision_state
            self.devices[name] = device
            self._by_cred[cred_id] = name
            return device

    def delete_device(self, name):
        with self.lock:
            device = self.devices.pop(name, None)
            if device is not None:
                self._by_cred = {k: v for k, v in self._by_cred.items() if v != name}
            return device

    def get(self, name):
        with self.lock:
            return self.devices.get(name)

    def by_credentials_id(self, cred_id):
        with self.lock:
            name = self._by_cred.get(cred_id)
            return self.devices.get(name) if name is not None else None

    # ---- CONNECT authentication (DefaultTransportApiService.validateCredentials) ----
    @staticmethod
    def _basic_check(device, client_id, username, password):
        cred = device.credentials
        if cred.get("clientId") and cred["clientId"] != client_id:
            return "mismatch"
        if cred.get("userName") and cred["userName"] != username:
            return "mismatch"
        if cred.get("password"):
            return "valid" if password == cred["password"] else "password"
        return "valid"

    def authenticate(self, client_id, username, password):
        """The device for these CONNECT fields, or None. Password is a str or None."""
        with self.lock:
            if not username:
                device = self.by_credentials_id(sha3(client_id)) if client_id else None
                if device and device.credentials_type == MQTT_BASIC and \
                        self._basic_check(device, client_id, username, password) == "valid":
                    return device
                return None
            device = self.by_credentials_id(sha3(client_id, username)) if client_id else None
            if device and device.credentials_type == MQTT_BASIC:
                result = self._basic_check(device, client_id, username, password)
                if result == "valid":
                    return device
                if result == "password":
                    return None
            device = self.by_credentials_id(username)
            if device is None:
                return None
            if device.credentials_type == ACCESS_TOKEN:
                return device              # the password is ignored for access tokens (docs/thingsboard.md §1)
            if device.credentials_type == MQTT_BASIC and \
                    self._basic_check(device, client_id, username, password) == "valid":
                return device
            return None

    # ---- data ----
    def add_telemetry(self, device, entries):
        with self.lock:
            for ts, values in entries:
                device.telemetry.append({"ts": ts, "values": values})
                device.telemetry_count += 1
                for key, value in values.items():
                    # ts_kv_latest keeps the value with the newest ts, not the last one received.
                    if ts >= device.latest_ts.get(key, -2**63):
                        device.latest[key] = value
                        device.latest_ts[key] = ts

    def device_dict(self, device, connected=False):
        with self.lock:
            creds = device.credentials
            return {
                "name": device.name,
                "profileKey": device.profile_key,
                "credentialsType": device.credentials_type,
                "credentials": dict(creds) if isinstance(creds, dict) else creds,
                "clientAttributes": dict(device.client_attributes),
                "sharedAttributes": dict(device.shared_attributes),
                "serverAttributes": dict(device.server_attributes),
                "latestTelemetry": dict(device.latest),
                "telemetryCount": device.telemetry_count,
                "gateway": device.gateway,
                "connected": connected,
                "firmwareId": device.firmware_id,
                "softwareId": device.software_id,
            }

    # ---- persistence ----
    def to_json(self):
        with self.lock:
            return {
                "version": 1,
                "profiles": [p.to_dict() for p in self.profiles.values()],
                "otaPackages": [p.to_dict() for p in self.ota_packages.values()],
                "devices": [{
                    "name": d.name, "profileKey": d.profile_key, "credentialsType": d.credentials_type,
                    "credentials": d.credentials, "clientAttributes": d.client_attributes,
                    "sharedAttributes": d.shared_attributes, "serverAttributes": d.server_attributes,
                    "telemetry": list(d.telemetry), "telemetryCount": d.telemetry_count,
                    "gateway": d.gateway, "rpcSeq": d.rpc_seq,
                    "firmwareId": d.firmware_id, "softwareId": d.software_id,
                } for d in self.devices.values()],
            }

    def save(self, path):
        data = json.dumps(self.to_json(), ensure_ascii=False)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        with self.lock:
            for p in data.get("otaPackages", []):
                package = Package.from_dict(p)
                self.ota_packages[package.id] = package
            for p in data.get("profiles", []):
                self.add_profile(Profile.from_dict(p))
            for d in data.get("devices", []):
                if d["name"] in self.devices:
                    continue
                device = self.add_device(d["name"], d.get("profileKey") if d.get("profileKey") in self.profiles else None,
                                         d["credentialsType"], d["credentials"], gateway=d.get("gateway", False))
                device.client_attributes.update(d.get("clientAttributes", {}))
                device.shared_attributes.update(d.get("sharedAttributes", {}))
                device.server_attributes.update(d.get("serverAttributes", {}))
                self.add_telemetry(device, [(e["ts"], e["values"]) for e in d.get("telemetry", [])])
                device.telemetry_count = max(device.telemetry_count, d.get("telemetryCount", 0))
                device.rpc_seq = d.get("rpcSeq", 0)
                device.firmware_id = d.get("firmwareId")
                device.software_id = d.get("softwareId")
