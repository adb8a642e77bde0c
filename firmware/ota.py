# Firmware updates from ThingsBoard over MQTT (OTA, issue 18): download, verify, apply.
#
# Loaded by firmware/remote.py only when the platform announces a firmware other than this one,
# or when the slot record (bootslot.py) holds unfinished business: a firmware on trial to
# confirm, an UPDATED or FAILED to report. Unloaded when done: the meter has ~100 KB of heap.
#
# The protocol (docs/thingsboard.md §14.4 to §14.6): the shared attributes fw_title,
# fw_version, fw_size, fw_checksum, fw_checksum_algorithm announce a package; the meter asks
# for it piece by piece, PUBLISH v2/fw/request/<requestId>/chunk/<n> with the chunk size as
# the payload, and gets each on v2/fw/response/<requestId>/chunk/<n>; an error arrives on
# v2/fw/error and the server closes the session. Progress is telemetry: fw_state DOWNLOADING,
# DOWNLOADED, VERIFIED, UPDATING, UPDATED or FAILED (with fw_error).
#
# Steps, each a short piece of work per main-loop step (the loop keeps counting pulses and
# sending readings; a chunk is asked for only when no reading waits, at most every _GAP_MS):
#   1. announced: checked (title, size, algorithm, free flash); a package that failed here
#      before is never tried again;
#   2. download into ota/pkg.bin, one chunk appended per request and hashed as it comes. A
#      closed file is the unit of atomicity (LittleFS keeps a file as it was until it is
#      closed: docs/unix-port.md §3), so after a power cut or a dropped session the file
#      holds whole chunks, and the download resumes after the last one (rehashing what is
#      there); state/otadl.json says which package the file belongs to;
#   3. the whole package is checked against fw_checksum, then its manifest
#      (tools/ota_package.py: title, version, files with sizes and SHA-256);
#   4. each file is written into the slot that is not running (ota/1 or ota/2), read back and
#      checked against the manifest. The slot is not live yet: a power cut here only means
#      unpacking again;
#   5. the switch: one record, state/bootslot.json, written by rename (bootslot.py), then a reset;
#   6. the new firmware is on trial (bootslot.py): once it is in the run state and a reading
#      got its PUBACK, this module (in the new firmware) confirms it and reports UPDATED.
#      Otherwise bootslot.py goes back to the old slot, whose firmware reports FAILED.
#
# Names: MicroPython interns every name for good (main.py), so the attributes and methods
# here reuse names the firmware has interned anyway; the comments say what each holds.

import json
import os
from binascii import crc32, hexlify
from hashlib import sha256

from micropython import const

from firmware import telemetry, version
from firmware.link import LinkError

_CHUNK = const(2048)  # bytes per request: well within the link's packet limit (link.py)
_GAP_MS = const(250)  # between chunk requests: ~8 KB/s, a few messages/s under TB's limits
_WAIT_MS = const(20000)  # for one chunk, before it is asked for again
_ASKS = const(3)  # asks for one chunk before the session is given up (reconnect, resume)
_MAX = const(1048576)  # the largest package considered at all
_SPARE = const(32768)  # flash left free after the download and the unpacked slot
_PIECE = const(512)  # read and write size when hashing and unpacking
_MANIFEST_MAX = const(8192)
_PKG = const("ota/pkg.bin")
_DL = const("otadl")  # store record: the package ota/pkg.bin holds
_SLOT = const("bootslot")  # bootslot.py's record (the module's name: interned anyway)
# Strings as long constants, bytes or constant tuples: MicroPython interns a short str literal.
_KEYS = const("fw_title fw_version fw_size fw_checksum fw_checksum_algorithm deleted")
_REQUEST = const("v2/fw/request/%d/chunk/%d")
_RESPONSE = const("v2/fw/response/%d/chunk/%d")
_ERROR = const(b"v2/fw/error")
_DOWNLOADING = const(b'{"fw_state":"DOWNLOADING"}')
_DOWNLOADED = const(b'{"fw_state":"DOWNLOADED"}')
_VERIFIED = const(b'{"fw_state":"VERIFIED"}')
_UPDATING = const(b'{"fw_state":"UPDATING"}')
_UPDATED = const(b'{"fw_state":"UPDATED"}')
_FAILED = const('{"fw_state":"FAILED","fw_error":%s}')
_MAGIC = const(b"MOTA1 ")
# self.state
_IDLE = const(0)
_FETCH = const(1)  # downloading
_CHECK = const(2)  # downloaded: the checksum, then the manifest
_UNPACK = const(3)  # writing and checking the files, one per step
_SWITCH = const(4)  # the slot record, then the reset


def _rm(path):
    # A slot's tree, files first. A power cut half-way leaves a partial tree that nothing
    # points at; the next download removes the rest.
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _dir(path):
    # The folders above path.
    d = ""
    for part in path.split("/")[:-1]:
        d = d + "/" + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass  # exists


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


def _path(run):
    # The slot to fill: the one that is not running.
    return ("ota/1", "ota/2")[1 if run == 1 else 0]


def _head(obj, what, size, start):
    # The manifest's files, or why the package cannot be used. obj: the manifest; what: the
    # version announced (fw_version); size: the package's; start: where its files begin.
    title, v, files = (obj.get(k) for k in ("title", "version", "files")) if \
        isinstance(obj, dict) else (None, None, None)
    if title != version.TITLE or v != what:
        return "the manifest is not %s %s" % (version.TITLE, what)
    if not isinstance(files, list) or not files:
        return "the manifest lists no files"
    block = os.statvfs(".")[0]
    total, blocks, init = start, 0, False
    for e in files:
        if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and
                isinstance(e[1], int) and not isinstance(e[1], bool) and e[1] >= 0 and
                isinstance(e[2], str) and len(e[2]) == 64):
            return "a manifest entry is not [path, size, sha256]"
        p = e[0].encode()
        # Only the firmware package, and nothing that climbs out of the slot.
        if not p.startswith(b"firmware/") or not p.endswith(b".mpy") or b"/." in p or \
                b"//" in p or len(p) > 64 or \
                [c for c in p if not (c in b"_/.-" or 48 <= c <= 57 or 97 <= c <= 122)]:
            return "file name %r not allowed in a package" % e[0]
        init = init or p == b"firmware/__init__.mpy"
        total += e[1]
        blocks += (e[1] + block - 1) // block + 1
    if total != size:
        return "the manifest's files make %d bytes, the package has %d" % (total, size)
    if not init:
        return "the package has no firmware/__init__.mpy"
    free = _cap()
    if blocks * block + _SPARE > free:
        return "the unpacked firmware needs %d KB of flash, %d KB free" % (
            blocks * block // 1024, free // 1024)
    return files


class Ota:
    def __init__(self, store, log, hal):
        self._store = store
        self._log = log
        self._hal = hal
        rec = store.read(_SLOT)
        self._rec = rec if isinstance(rec, dict) else {}  # bootslot.py's record
        self.state = _IDLE
        self._candidate = None  # the package announced: (title, version, size, checksum, algorithm)
        self._msg = None  # a report waiting for its PUBACK: (payload, record to write after it)
        self.rid = hal.ticks_ms() % 100000  # the requestId: a new one each session
        self._len = 0  # bytes of the package on flash
        self._st = None  # the running SHA-256, or None for CRC32 (then in self._c)
        self._c = 0
        self._since = None  # when the chunk being waited for was asked for
        self._count = 0  # asks for that chunk
        self._next_ms = 0  # the next chunk request may go from then on
        self._files = None  # the manifest's files: [path, size, sha256]
        self._index = 0  # the file being unpacked
        self._offset = 0  # where its bytes start in the package

    # --- what the platform says --------------------------------------------------------------

    def on_connect(self):
        # A new session: nothing is in flight, and a new requestId (ThingsBoard keeps the
        # package per requestId and connection: docs/thingsboard.md §14.5).
        self.rid += 1
        self._since = None
        self._count = 0

    def update(self, attrs):
        """The fw_* shared attributes (pushed, or fetched at connect); {"deleted": [...]}
        withdraws the package."""
        log = self._log
        keys = _KEYS.split()
        gone = attrs.get(keys[5])
        if isinstance(gone, list):
            if keys[0] in gone and _IDLE < self.state < _SWITCH:
                log.warn("ota", "the package was withdrawn; download stopped")
                self.state = _IDLE
                self._candidate = None
            return
        if keys[0] not in attrs:
            return  # other shared attributes
        cand = tuple(attrs.get(k) for k in keys[:5])
        if cand == self._candidate:
            return  # already on it (a fetch after a reconnect)
        title, ver, size, text, alg = cand
        if (title, ver) == (version.TITLE, version.VERSION):
            self._candidate = None
            return
        if self.state >= _SWITCH or isinstance(self._rec.get("tries"), int):
            return  # a switch or a trial is under way: the next package waits for it
        self._candidate = cand
        self.state = _IDLE
        if isinstance(text, str) and text == self._rec.get("stop"):
            log.warn("ota", "firmware %r failed on this meter before; not tried again", ver)
            return
        why = None
        if not isinstance(ver, str) or not 0 < len(ver) <= 64:
            why = "fw_version is not a version"
        elif title != version.TITLE:
            why = "fw_title %r is not this firmware (%s)" % (title, version.TITLE)
        elif isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= _MAX:
            why = "fw_size %r is not 1..%d bytes" % (size, _MAX)
        elif alg not in ("SHA256", "CRC32"):
            why = "fw_checksum_algorithm %r cannot be checked here (SHA256, CRC32)" % (alg,)
        elif not isinstance(text, str) or len(text) != (64 if alg in ("SHA256",) else 8):
            why = "fw_checksum is not a %s" % alg
        if why is None:
            why = self._check()
        if why is not None:
            self._fail(why)

    def _check(self):
        # Start or resume the download. None, or why it cannot be done.
        title, ver, size, text, alg = self._candidate
        store = self._store
        dl = store.read(_DL)
        have = _len(_PKG)
        if not (isinstance(dl, dict) and dl.get("sum") == text and dl.get("size") == size) \
                or have < 0 or have > size or (have % _CHUNK and have != size):
            # Another package, or none: start afresh. The slot that is not running is the
            # one to fill; nothing points at it, so it may go.
            store.remove(_DL)
            try:
                os.remove(_PKG)
            except OSError:
                pass
            _rm(_path(self._rec.get("run")))
            have = 0
        # Room for the rest of the download and the unpacked tree (checked again, exactly,
        # from the manifest): a meter that runs out of flash half-way helps nobody.
        need = (size - have) + 2 * size + _SPARE
        free = _cap()
        if need > free:
            return "package of %d bytes too large: needs %d KB of flash, %d KB free" % (
                size, need // 1024, free // 1024)
        if have == 0:
            _dir(_PKG)
            with open(_PKG, "wb"):
                pass  # empty: appended to chunk by chunk
            store.write(_DL, {"sum": text, "size": size, "version": ver})
        self._st = sha256() if alg in ("SHA256",) else None
        self._c = 0
        if have:
            # Resume: the hash of what is already there, read back in small pieces.
            buf = bytearray(_PIECE)
            with open(_PKG, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    if self._st is not None:
                        self._st.update(memoryview(buf)[:n])
                    else:
                        self._c = crc32(memoryview(buf)[:n], self._c)
            self._log.info("ota", "resuming firmware %s at byte %d of %d", ver, have, size)
        else:
            self._log.info("ota", "downloading firmware %s (%d bytes, %s)", ver, size, alg)
        self._len = have
        self._since = None
        self._count = 0
        self.state = _FETCH if have < size else _CHECK
        self._emit(_DOWNLOADING)
        return None

    def on_message(self, topic, msg):
        """A chunk or an error (queued by firmware/remote.py, handled from the main loop)."""
        log = self._log
        if topic == _ERROR:
            # The server closes the session after it (docs/thingsboard.md §14.5); the next
            # session's attribute fetch says whether the package is still assigned.
            log.warn("ota", "the server refused the download: %r", bytes(msg[:40]))
            self._since = None
            return
        if self.state != _FETCH or self._since is None:
            log.warn("ota", "firmware chunk not asked for; ignored")
            return
        n = self._len // _CHUNK
        if topic != (_RESPONSE % (self.rid, n)).encode():
            log.warn("ota", "firmware chunk for another request or index; ignored")
            return
        size = self._candidate[2]
        want = min(_CHUNK, size - self._len)
        if len(msg) != want:
            # Not what fw_size promised: the package on the server is not the one announced.
            self._fail("chunk %d has %d bytes, not %d: the package does not match fw_size"
                       % (n, len(msg), want))
            return
        # Appended and closed: the chunk is on flash whole, or not at all (LittleFS).
        with open(_PKG, "r+b") as f:
            f.seek(0, 2)
            f.write(msg)
        if self._st is not None:
            self._st.update(msg)
        else:
            self._c = crc32(msg, self._c)
        self._len += want
        self._since = None
        self._count = 0
        self._next_ms = self._hal.ticks_add(self._hal.ticks_ms(), _GAP_MS)
        if self._len == size:
            self.state = _CHECK
            self._emit(_DOWNLOADED)

    # --- every main-loop step in the run state --------------------------------------------------

    def service(self, meter, link):
        """One piece of work. True when there is nothing left to do (remote.py unloads this)."""
        if self._msg is not None:
            payload, after = self._msg
            link.publish(telemetry.TOPIC, payload, 1)  # LinkError: kept, sent next session
            self._msg = None
            if after is not None:
                self._rec = after
                self._store.write(_SLOT, after)  # only after the PUBACK: at least once
            return False
        rec = self._rec
        if isinstance(rec.get("tries"), int):
            # This firmware is on trial: it proves itself once it is in the run state (this
            # runs only there) and the platform acknowledged a reading.
            if rec.get("version") != version.VERSION:
                if self._since is None:
                    self._since = 0
                    self._log.error("ota", "this firmware says %s, its package said %s: not "
                                    "confirmed", version.VERSION, rec.get("version"))
            elif meter.pipeline.published:
                done = {"run": rec.get("run"), "done": version.VERSION}
                self._store.write(_SLOT, done)  # a power cut after this: UPDATED next boot
                self._rec = done
                self._log.info("ota", "firmware %s confirmed", version.VERSION)
                self._store.remove(_DL)
            return False
        if "done" in rec:
            self._emit(_UPDATED, {"run": rec.get("run")})
            return False
        if "reason" in rec:
            self._log.error("ota", "update failed: %s", rec["reason"])
            self._msg = ((_FAILED % json.dumps(rec["reason"])).encode(),
                         {"run": rec.get("run"), "stop": rec.get("stop")})
            return False
        s = self.state
        if s == _FETCH:
            self._read(meter, link)
        elif s == _CHECK:
            self._parse()
        elif s == _UNPACK:
            self._write()
        elif s == _SWITCH:
            self._set(meter, link)
        return s == _IDLE

    def _read(self, meter, link):
        # Ask for the next chunk, paced, readings first; ask again when none came.
        hal = self._hal
        now = hal.ticks_ms()
        if self._since is not None:
            if hal.ticks_diff(now, self._since) < _WAIT_MS:
                return
            self._count += 1
            if self._count >= _ASKS:
                self._count = 0
                self._since = None
                raise LinkError("no firmware chunk in %d s" % (_ASKS * _WAIT_MS // 1000))
            self._log.warn("ota", "no answer for chunk %d; asking again", self._len // _CHUNK)
        elif hal.ticks_diff(now, self._next_ms) < 0:
            return
        if len(meter.pipeline.queue):
            return  # a reading waits: a download never holds readings back
        link.publish((_REQUEST % (self.rid, self._len // _CHUNK)).encode(), b"%d" % _CHUNK, 1)
        self._since = hal.ticks_ms()

    def _parse(self):
        # The whole package against fw_checksum, then its manifest: "MOTA1 <length>\n", the
        # manifest (JSON), then the files (tools/ota_package.py).
        title, ver, size, text, alg = self._candidate
        if self._st is not None:
            got = hexlify(self._st.digest()).decode()
        else:
            c = self._c & 0xFFFFFFFF  # ThingsBoard writes the CRC's bytes little-endian (§14.4)
            got = hexlify(bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24))).decode()
        if got != text:
            self._fail("%s of the download does not match fw_checksum" % alg)
            return
        why = None
        man = None
        with open(_PKG, "rb") as f:
            head = f.read(16)
            nl = head.find(b"\n")
            n = -1
            if head.startswith(_MAGIC) and nl > 0:
                try:
                    n = int(head[len(_MAGIC):nl])
                except ValueError:
                    pass
            if not 0 < n <= _MANIFEST_MAX:
                why = "not a firmware package for this meter"
            else:
                f.seek(nl + 1)
                try:
                    man = json.loads(f.read(n))
                except ValueError:
                    why = "the manifest is not JSON"
        if why is None:
            why = _head(man, ver, size, nl + 1 + n)
            if not isinstance(why, str):
                self._files, why = why, None
        if why is not None:
            self._fail(why)
            return
        _rm(_path(self._rec.get("run")))
        self._index = 0
        self._offset = nl + 1 + n
        self.state = _UNPACK
        self._emit(_VERIFIED)

    def _write(self):
        # One file per step: copied from the package into the slot, then read back and
        # checked against the manifest (what is on flash is what will run).
        path, size, digest = self._files[self._index]
        dest = _path(self._rec.get("run")) + "/" + path
        _dir(dest)
        buf = bytearray(_PIECE)
        mv = memoryview(buf)
        left = size
        with open(_PKG, "rb") as src:
            src.seek(self._offset)
            with open(dest, "wb") as f:
                while left > 0:
                    n = src.readinto(buf if left >= _PIECE else mv[:left])
                    if not n:
                        break
                    f.write(mv[:n])
                    left -= n
        self._hal.wdt_feed()
        h = sha256()
        left = size
        with open(dest, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
                left -= n
        if left or hexlify(h.digest()).decode() != digest:
            self._fail("%s does not match the manifest" % path)
            return
        self._offset += size
        self._index += 1
        if self._index == len(self._files):
            self.state = _SWITCH

    def _set(self, meter, link):
        # The switch: from the next boot on, bootslot.py runs the new slot on trial, and
        # comes back to this one by itself if it does not prove itself.
        title, ver, size, text, alg = self._candidate
        run = self._rec.get("run")
        slot = 2 if run == 1 else 1
        self._store.write(_SLOT, {"run": slot, "last": run if run in (1, 2) else 0, "tries": 0,
                                  "version": ver, "sum": text})
        # power cut here: the next boot runs the new slot on trial; the leftovers below are
        # removed by the next download
        self._store.remove(_DL)
        try:
            os.remove(_PKG)
        except OSError:
            pass
        self._log.info("ota", "firmware %s in slot %d; restarting into it", ver, slot)
        try:
            link.publish(telemetry.TOPIC, _UPDATING, 1)
        except LinkError:
            pass  # the reset goes ahead: the new firmware reports for itself
        meter.reboot("firmware update")

    # --- reports ---------------------------------------------------------------------------------

    def _emit(self, payload, obj=None):
        # obj: the slot record to write once the report is acknowledged
        self._msg = (payload, obj)

    def _fail(self, why):
        """FAILED with the reason. This package is never tried again on this meter: the same
        bytes would fail the same way."""
        self._log.error("ota", "update failed: %s", why)
        self.state = _IDLE
        self._store.remove(_DL)
        try:
            os.remove(_PKG)
        except OSError:
            pass
        after = dict(self._rec)
        after["stop"] = self._candidate[3]
        self._msg = ((_FAILED % json.dumps(why[:120])).encode(), after)
