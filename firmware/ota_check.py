# The steps of a firmware update (firmware/ota.py) that run once or twice an update: the
# announcement and the flash checked and the download started or resumed, the whole package
# against fw_checksum, the hand-over to bootslot.py, FAILED, and the last update's result.
# Loaded by Ota.start() for one step and dropped after it: the download's every-step code
# (firmware/ota.py) then has this module's 4 KB more room. A part of the Ota object in a file
# of its own: functions of it (ota) that set its download state (tests/unit/test_ownership.py
# lists each field); their names are ones the firmware interns anyway.

import json
import os
from binascii import hexlify
from hashlib import sha256

from micropython import const

from firmware import telemetry, version
from firmware.link import LinkError

_CHUNK = const(512)  # firmware/ota.py _CHUNK
_MAX = const(1048576)  # the largest package considered at all
_SPARE = const(32768)  # flash left free after the download and the unpacked slot
_PIECE = const(512)  # read size when hashing what is on flash
_PKG = const("ota/pkg.bin")
_DL = const("otadl")  # store record: the package ota/pkg.bin holds
_SLOT = const("bootslot")  # bootslot.py's record
_DOWNLOADING = const(b'{"fw_state":"DOWNLOADING"}')
_VERIFIED = const(b'{"fw_state":"VERIFIED"}')
_UPDATING = const(b'{"fw_state":"UPDATING"}')
_UPDATED = const(b'{"fw_state":"UPDATED"}')
_FAILED = const('{"fw_state":"FAILED","fw_error":%s}')
# ota.state: firmware/ota.py's
_IDLE = const(0)
_FETCH = const(1)
_CHECK = const(2)
_SWITCH = const(3)
_WAIT = const(4)


def run(ota, meter, link, why):
    # One step, as ota.state says (firmware/ota.py Ota.start()).
    rec = ota._rec
    if why is not None:
        _fail(ota, why)
    elif "done" in rec or "reason" in rec:
        show(ota, rec)
    elif ota.state == _WAIT:
        why = valid(ota._candidate) or _check(ota)
        if why is not None:
            _fail(ota, why)
    elif ota.state == _CHECK:
        resolve(ota)
    elif ota.state == _SWITCH:
        reboot(ota, meter, link)


def _len(path):
    # A file's length, -1 when it is absent.
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _cap():
    # Flash free: block size * blocks available.
    st = os.statvfs(".")
    return st[0] * st[4]


def valid(obj):
    # Why the announced package (obj: the candidate) cannot be taken, or None.
    title, ver, size, text, alg = obj
    if not isinstance(ver, str) or not 0 < len(ver) <= 64:
        return "fw_version is not a version"
    if title != version.TITLE:
        return "fw_title %r is not this firmware (%s)" % (title, version.TITLE)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= _MAX:
        return "fw_size %r is not 1..%d bytes" % (size, _MAX)
    if alg not in ("SHA256", "CRC32"):
        return "fw_checksum_algorithm %r cannot be checked here (SHA256, CRC32)" % (alg,)
    if not isinstance(text, str) or len(text) != (64 if alg in ("SHA256",) else 8):
        return "fw_checksum is not a %s" % alg
    return None


def _check(ota):
    # Start or resume the download. None, or why it cannot be done.
    title, ver, size, text, alg = ota._candidate
    store = ota._store
    dl = store.read(_DL)
    have = _len(_PKG)
    if not (isinstance(dl, dict) and dl.get("sum") == text and dl.get("size") == size) \
            or have < 0 or have > size or (have % _CHUNK and have != size):
        # Another package, or none: start afresh.
        store.remove(_DL)
        try:
            os.remove(_PKG)
        except OSError:
            pass
        have = 0
    # Room for the rest of the download and the unpacked tree (checked again, exactly, from
    # the manifest, when bootslot.py has cleared the spare slot): a meter that runs out of
    # flash half-way helps nobody.
    need = (size - have) + 2 * size + _SPARE
    free = _cap()
    if need > free:
        return "package of %d bytes too large: needs %d KB of flash, %d KB free" % (
            size, need // 1024, free // 1024)
    if have == 0:
        try:
            os.mkdir("ota")
        except OSError:
            pass  # exists
        with open(_PKG, "wb"):
            pass  # empty: appended to chunk by chunk
        store.write(_DL, {"sum": text, "size": size, "version": ver})
    _head(ota, have)
    ota._len = have
    ota._since = None
    ota._count = 0
    ota.state = _FETCH if have < size else _CHECK
    if have < size:  # (all there already: the checksum's report follows)
        ota._emit(_DOWNLOADING)
    return None


def _head(ota, index):
    # The running checksum of the index bytes on flash already: read back in small pieces.
    title, ver, size, text, alg = ota._candidate
    ota._st = sha256() if alg in ("SHA256",) else 0
    if index:
        buf = bytearray(_PIECE)
        with open(_PKG, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                ota._merge(memoryview(buf)[:n])
        ota._log.info("ota", "resuming firmware %s at byte %d of %d", ver, index, size)
    else:
        ota._log.info("ota", "downloading firmware %s (%d bytes, %s)", ver, size, alg)


def resolve(ota):
    # The whole package against fw_checksum. The manifest and every file are checked when
    # the package is unpacked, at the next boot (bootslot.py).
    title, ver, size, text, alg = ota._candidate
    if not isinstance(ota._st, int):
        got = hexlify(ota._st.digest()).decode()
    else:
        c = ota._st & 0xFFFFFFFF  # ThingsBoard writes the CRC's bytes little-endian (§14.4)
        got = hexlify(bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24))).decode()
    if got != text:
        _fail(ota, "%s of the download does not match fw_checksum" % alg)
        return
    ota.state = _SWITCH
    ota._emit(_VERIFIED)


def reboot(ota, meter, link):
    # The hand-over: bootslot.py unpacks the package into the slot that is not running at the
    # next boot, while the heap is still empty, checks every file against the manifest and
    # boots the new firmware on trial; the old slot stays as it is.
    title, ver, size, text, alg = ota._candidate
    ota._store.write(_SLOT, {"run": ota._rec.get("run") or 0, "new": ver, "name": title,
                           "sum": text, "size": size})
    # power cut here: the next boot applies it all the same
    ota._log.info("ota", "firmware %s verified; restarting to apply it", ver)
    try:
        link.publish(telemetry.TOPIC, _UPDATING, 1)
    except LinkError:
        pass  # the reset goes ahead: the new firmware reports for itself
    meter.reboot("firmware update")


def show(ota, obj):
    # The last update's result (obj: bootslot.py's record): confirmed by remote.py (UPDATED),
    # or given up by bootslot.py (FAILED: rolled back, or not unpacked).
    if "done" in obj:
        ota._emit(_UPDATED, {"run": obj.get("run")})
        return
    ota._log.error("ota", "firmware update failed: %s", obj["reason"])
    ota._msg = ((_FAILED % json.dumps(obj["reason"])).encode(),
              {"run": obj.get("run"), "stop": obj.get("stop")})


def _fail(ota, why):
    # FAILED with the reason. This package is never tried again on this meter: the same bytes
    # would fail the same way.
    ota._log.error("ota", "update failed: %s", why)
    ota.state = _IDLE
    ota._store.remove(_DL)
    try:
        os.remove(_PKG)
    except OSError:
        pass
    after = dict(ota._rec)
    after["stop"] = ota._candidate[3]
    ota._msg = ((_FAILED % json.dumps(why[:120])).encode(), after)
