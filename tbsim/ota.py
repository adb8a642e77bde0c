"""OTA packages as ThingsBoard keeps, announces and serves them.

Sources (thingsboard/thingsboard):
  * checksums: dao/src/main/java/org/thingsboard/server/dao/ota/BaseOtaPackageService.java
    (generateChecksum: Guava's HashFunction, HashCode.toString()) and
    dao/src/main/java/org/thingsboard/server/dao/service/validator/OtaPackageDataValidator.java;
  * what a device is told: application/src/main/java/org/thingsboard/server/service/ota/
    DefaultOtaPackageStateService.java (target_* and fw_state time series, fw_* shared attributes);
  * the chunks: common/cache/src/main/java/org/thingsboard/server/cache/ota/OtaPackageDataCache.java
    (get(key, chunkSize, chunk)) and MqttTransportHandler.java (getOtaPackageCallback).
"""
import binascii
import hashlib
import struct
import uuid
from dataclasses import dataclass, field

FIRMWARE, SOFTWARE = "FIRMWARE", "SOFTWARE"
PREFIX = {FIRMWARE: "fw", SOFTWARE: "sw"}
ALGORITHMS = ("MD5", "SHA256", "SHA384", "SHA512", "CRC32", "MURMUR3_32", "MURMUR3_128")
# OtaPackageKey: every key ThingsBoard deletes from the shared scope when a package is unassigned.
ALL_KEYS = ("title", "version", "ts", "state", "size", "checksum", "checksum_algorithm", "url", "tag")
MAX_PAYLOAD = 65536          # transport.mqtt.netty.max_payload_size: the PAYLOAD_TOO_LARGE limit


def checksum(algorithm, data):
    """The text ThingsBoard stores in fw_checksum: lower-case hex of Guava's HashCode bytes.

    For MD5 and the SHAs that is the usual hexdigest. CRC32 and MURMUR3_32 are built from an int
    (HashCode.fromInt), whose bytes are little-endian: CRC32("123456789") = 0xcbf43926 is written
    "2639f4cb". MURMUR3_128 is Guava's x64 variant with seed 0 (h1 then h2, little-endian)."""
    if algorithm in ("MD5", "SHA256", "SHA384", "SHA512"):
        name = "md5" if algorithm == "MD5" else "sha" + algorithm[3:]
        return hashlib.new(name, data).hexdigest()
    if algorithm == "CRC32":
        return struct.pack("<I", binascii.crc32(data) & 0xFFFFFFFF).hex()
    if algorithm in ("MURMUR3_32", "MURMUR3_128"):
        import mmh3              # pinned in requirements.txt; only these two algorithms need it
        if algorithm == "MURMUR3_32":
            return struct.pack("<I", mmh3.hash(data, 0, signed=False)).hex()
        return mmh3.hash_bytes(data, 0).hex()
    raise ValueError(f"unknown checksum algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")


@dataclass
class Package:
    title: str
    version: str
    type: str = FIRMWARE
    data: bytes = None                 # None for a URL package
    url: str = None
    checksum_algorithm: str = None
    checksum: str = None
    tag: str = None
    file_name: str = None
    content_type: str = "application/octet-stream"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def size(self):
        return None if self.data is None else len(self.data)

    def info(self):
        return {"id": self.id, "title": self.title, "version": self.version, "type": self.type,
                "url": self.url, "size": self.size, "checksumAlgorithm": self.checksum_algorithm,
                "checksum": self.checksum, "tag": self.tag, "fileName": self.file_name,
                "contentType": self.content_type, "hasData": self.data is not None}

    def to_dict(self):
        d = self.info()
        d["data"] = self.data.hex() if self.data is not None else None
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(d["title"], d["version"], d.get("type", FIRMWARE),
                   bytes.fromhex(d["data"]) if d.get("data") is not None else None, d.get("url"),
                   d.get("checksumAlgorithm"), d.get("checksum"), d.get("tag"), d.get("fileName"),
                   d.get("contentType") or "application/octet-stream", d["id"])


def make_package(title, version, data=None, url=None, type=FIRMWARE, checksum_algorithm="SHA256",
                 checksum_text=None, tag=None, file_name=None, content_type=None):
    """A checked package, or ValueError with OtaPackageDataValidator's message."""
    if not title or not isinstance(title, str):
        raise ValueError("OtaPackage title should be specified!")
    if not version or not isinstance(version, str):
        raise ValueError("OtaPackage version should be specified!")
    if type not in PREFIX:
        raise ValueError("Type should be specified!")
    if (data is None) == (url is None):
        raise ValueError("give the package's data or a URL, not both")
    if data is not None:
        algorithm = checksum_algorithm or "SHA256"
        computed = checksum(algorithm, data)
        if checksum_text and checksum_text != computed:
            raise ValueError("Wrong otaPackage file!")
        return Package(title, version, type, bytes(data), None, algorithm, computed, tag,
                       file_name or f"{title}-{version}.bin", content_type or "application/octet-stream")
    if checksum_algorithm is not None and checksum_algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {checksum_algorithm!r}")
    # URL packages: ThingsBoard does not verify anything, the checksum is free text.
    return Package(title, version, type, None, url, checksum_algorithm, checksum_text, tag, file_name,
                   content_type or "application/octet-stream")


def java_int(n):
    """The value of n after 32-bit two's-complement overflow, as a Java int multiplication gives."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n >= 1 << 31 else n


def chunk_of(data, chunk_size, chunk):
    """OtaPackageDataCache.get(key, chunkSize, chunk): the whole file for a size below 1, the slice
    otherwise, empty past the end. None when ThingsBoard's arraycopy would throw (chunkSize * chunk
    overflows an int to a negative start), in which case it logs and sends nothing."""
    if chunk_size < 1:
        return data
    start = java_int(chunk_size * chunk)
    size = min(len(data) - start, chunk_size)
    if start < len(data) and size > 0:
        if start < 0:
            return None
        return data[start:start + size]
    return b""


def attribute_values(package):
    """DefaultOtaPackageStateService.updateAttributes: (the shared attributes set, the keys deleted)."""
    p = PREFIX[package.type]
    values = {f"{p}_title": package.title, f"{p}_version": package.version}
    deleted = []
    if package.tag:
        values[f"{p}_tag"] = package.tag
    else:
        deleted.append(f"{p}_tag")
    if package.size is not None:
        values[f"{p}_size"] = package.size
    if package.checksum_algorithm:
        values[f"{p}_checksum_algorithm"] = package.checksum_algorithm
    if package.checksum:
        values[f"{p}_checksum"] = package.checksum
    if package.url is not None:
        values[f"{p}_url"] = package.url
    else:
        deleted.append(f"{p}_url")
    return values, deleted


def target_telemetry(package, ts_ms):
    """The time series written when a package is assigned (OTASTATE send): target_* and QUEUED."""
    p = PREFIX[package.type]
    values = {f"target_{p}_title": package.title, f"target_{p}_version": package.version}
    if package.tag:
        values[f"target_{p}_tag"] = package.tag
    values[f"target_{p}_ts"] = ts_ms
    values[f"{p}_state"] = "QUEUED"
    return values
