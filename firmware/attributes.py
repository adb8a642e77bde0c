# The one-shot messages: what the platform must be told once, not with every reading.
#
# - The client-attributes message: the power supplier's secret key and the CUPS, which the
#   platform's rule chain uses to attach the meter to its supplier and grid.
# - The firmware report: current_fw_title and current_fw_version, as TELEMETRY (time series),
#   which is where ThingsBoard's firmware dashboard reads them; no server code reads them as
#   attributes (docs/thingsboard.md §14.6). Sent by the pipeline in the run state.
#
# Each is sent at QoS 1; its marker (a hash of what was sent and to which credential) is written
# only after the PUBACK. A power cut before the marker means it is sent again: at least once,
# never lost. Once acknowledged it is not sent again unless the values change (new firmware, a
# new config), the credentials change (re-provisioning: a new device on the platform), or the
# technician's gesture asks for it.
#
# A marker the flash refuses (or a refused clear) is held in RAM by the store and written again
# later (firmware/store.py): this boot neither resends the attributes on every reconnect nor
# skips them after the gesture; a power cut before the flash takes it means one more send.

import json
from hashlib import sha256
from binascii import hexlify

from micropython import const

from firmware import version

TOPIC = b"v1/devices/me/attributes"
_RECORD = const("attrs")
_FW_RECORD = const("fwver")


# cfg=None everywhere below means the firmware report rather than the client attributes: one set
# of names for both (MicroPython interns every name for good: main.py).

def payload(cfg):
    if cfg is None:
        return json.dumps({"current_fw_title": version.TITLE,
                           "current_fw_version": version.VERSION}).encode()
    return json.dumps({cfg["attr_supplier_key"]: cfg["supplier_key"],
                       cfg["attr_cups_key"]: cfg["cups"]}).encode()


def marker(cfg, creds):
    # One-way digest: a marker file never holds the key, the token or the CUPS themselves.
    h = sha256()
    for part in ((version.TITLE, version.VERSION) if cfg is None else
                 (cfg["attr_supplier_key"], cfg["supplier_key"], cfg["attr_cups_key"],
                  cfg["cups"])) + (creds.get("type", ""), creds.get("token", ""),
                                   creds.get("clientId", ""), creds.get("userName", "")):
        h.update(part.encode())
        h.update(b"\0")
    return hexlify(h.digest()).decode()[:32]


class AttributeMarker:
    def __init__(self, store):
        self._store = store

    def is_sent(self, cfg, creds):
        rec = self._store.read(_FW_RECORD if cfg is None else _RECORD)
        return isinstance(rec, dict) and rec.get("hash") == marker(cfg, creds)

    def mark_sent(self, cfg, creds):
        self._store.write(_FW_RECORD if cfg is None else _RECORD, {"hash": marker(cfg, creds)})

    def clear(self):
        # The gesture and the RPC ask for everything to be told again: a device re-created on
        # the platform under the same credentials has lost the firmware report too.
        self._store.remove(_RECORD)
        self._store.remove(_FW_RECORD)
