# The one-shot client-attributes message: the power supplier's secret key and the CUPS, which
# the platform's rule chain uses to attach the meter to its supplier and grid.
#
# Sent at QoS 1 after connecting; the marker (a hash of what was sent and to which credential)
# is written only after the PUBACK. A power cut before the marker means it is sent again: at
# least once, never lost. Once acknowledged it is not sent again unless the values change, the
# credentials change (re-provisioning), or the technician's gesture asks for it.

import json
from hashlib import sha256
from binascii import hexlify

from micropython import const

TOPIC = b"v1/devices/me/attributes"
_RECORD = const("attrs")


def payload(cfg):
    return json.dumps({cfg["attr_supplier_key"]: cfg["supplier_key"],
                       cfg["attr_cups_key"]: cfg["cups"]}).encode()


def marker(cfg, creds):
    # One-way digest: the marker file never holds the key, the token or the CUPS themselves.
    h = sha256()
    for part in (cfg["attr_supplier_key"], cfg["supplier_key"], cfg["attr_cups_key"],
                 cfg["cups"], creds.get("type", ""), creds.get("token", ""),
                 creds.get("clientId", ""), creds.get("userName", "")):
        h.update(part.encode())
        h.update(b"\0")
    return hexlify(h.digest()).decode()[:32]


class AttributeMarker:
    def __init__(self, store):
        self._store = store

    def is_sent(self, cfg, creds):
        rec = self._store.read(_RECORD)
        return isinstance(rec, dict) and rec.get("hash") == marker(cfg, creds)

    def mark_sent(self, cfg, creds):
        self._store.write(_RECORD, {"hash": marker(cfg, creds)})

    def clear(self):
        self._store.remove(_RECORD)
