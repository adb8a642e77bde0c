# Firmware updates from ThingsBoard over MQTT (OTA, issue 18): download, verify, apply.
#
# Loaded by firmware/remote.py only when the platform announces a firmware other than this one,
# and unloaded when done: the meter has ~100 KB of heap, and in the run state about 20 KB of it
# free, which is why unpacking is left to the boot.
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
#   3. the whole package is checked against fw_checksum (VERIFIED); the slot record
#      (state/bootslot.json) is told to apply it, UPDATING is reported, the meter resets;
#   4. at that boot, before the firmware is imported (the heap is empty then), bootslot.py
#      checks the manifest (tools/ota_package.py: title, version, files with sizes and
#      SHA-256), writes each file into the slot that is not running (ota/1 or ota/2), reads
#      it back against the manifest, then switches the record to the new slot, on trial. A
#      power cut during this repeats it; the old slot is never touched;
#   5. the new firmware is on trial (bootslot.py): once it is in the run state and a reading
#      got its PUBACK, firmware/remote.py (always loaded: a new firmware's first boots must not
#      depend on room for this module) confirms it, and this module reports UPDATED.
#      Otherwise bootslot.py goes back to the old slot, and this module, in the old firmware,
#      reports FAILED with the reason.
#
# Heap: a MemoryError in any step here is caught here, never a reset (loading this module is
# firmware/remote.py's, which says "no room" and lets the next session try): one log line,
# nothing more for _PAUSE_MS, then the download resumes from flash as after a power cut (the
# file and its record are the truth; the checksum is rebuilt from the file). fw_state stays
# DOWNLOADING: a heap short for a moment is no reason for FAILED, which stops a package for
# good. After _ASKS pauses in a row with no chunk written, the module gives its heap back to
# metering for the rest of the session; the next session's announcement resumes it.
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

# Bytes per request. umqtt reads a message in one allocation, and in the run state the heap's
# largest free piece can be as small as ~600 bytes (measured on the Unix port with the ESP32
# heap size, docs/benchmarks.md): 512 fits where 2048 does not.
_CHUNK = const(512)
_GAP_MS = const(100)  # between chunk requests: a few messages/s, well under TB's limits
_WAIT_MS = const(20000)  # for one chunk, before it is asked for again
_ASKS = const(3)  # asks for one chunk before the session is given up (reconnect, resume)
_PAUSE_MS = const(10000)  # after a MemoryError: the peak that caused it (a batch) is over
_MAX = const(1048576)  # the largest package considered at all
_SPARE = const(32768)  # flash left free after the download and the unpacked slot
_PIECE = const(512)  # read and write size when hashing and unpacking
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
# self.state
_IDLE = const(0)
_FETCH = const(1)  # downloading
_CHECK = const(2)  # downloaded: the checksum
_SWITCH = const(3)  # verified: the slot record, then the reset
_WAIT = const(4)  # to be started, or resumed from flash after a MemoryError


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


def _values(obj):
    # Why the announced package (obj: the candidate) cannot be taken, or None. (Functions are
    # kept short here: each one's code is one allocation when the module loads, into a heap in
    # pieces.)
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


class Ota:
    def __init__(self, store, log, hal):
        self._store = store
        self._log = log
        self._hal = hal
        rec = store.read(_SLOT)
        self._rec = rec if isinstance(rec, dict) else {}  # bootslot.py's record
        self.state = _IDLE
        self._candidate = None  # the package announced: (title,
        # version, size, checksum, algorithm)
        self._msg = None  # a report waiting for its PUBACK: (payload, record to write after it)
        self.rid = hal.ticks_ms() % 100000  # the requestId: a new one each session
        self._len = 0  # bytes of the package on flash
        self._st = None  # the running checksum: a SHA-256 object, or the CRC32 as an int
        self._since = None  # when the chunk being waited for was asked for
        self._count = 0  # asks for that chunk
        self.failures = 0  # MemoryErrors in a row, no chunk written since
        # The next chunk request may go from then on. Not 0: ticks are not a count from 0 (on
        # the ESP32 they wrap every 2**30 ms, and a ticks_diff against 0 can read "in 12 days"),
        # which held the first request of each session back until the wrap.
        self._next_ms = hal.ticks_ms()

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
        try:
            log = self._log
            keys = _KEYS.split()
            gone = attrs.get(keys[5])
            if isinstance(gone, list):
                if keys[0] in gone and self.state != _IDLE and self.state != _SWITCH:
                    self.state = _IDLE
                    self._candidate = None
                    log.warn("ota", "the package was withdrawn; download stopped")
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
            if self.state == _SWITCH or isinstance(self._rec.get("tries"), int):
                return  # a switch or a trial is under way: the next package waits for it
            self._candidate = cand
            self.state = _IDLE
            if isinstance(text, str) and text == self._rec.get("stop"):
                log.warn("ota", "firmware %r failed on this meter before; not tried again", ver)
                return
            self.state = _WAIT  # to be started: again by service() if this runs out of heap
            self.start()
        except MemoryError:
            self._short()

    def start(self):
        # The candidate's download started or resumed (state _WAIT before): _FETCH, _CHECK,
        # or _IDLE with FAILED after.
        why = _values(self._candidate) or self._check()
        if why is not None:
            self._fail(why)

    def _check(self):
        # Start or resume the download. None, or why it cannot be done.
        title, ver, size, text, alg = self._candidate  # pyright: ignore  (set before use)
        store = self._store
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
        # Room for the rest of the download and the unpacked tree (checked again, exactly,
        # from the manifest, when bootslot.py has cleared the spare slot): a meter that runs
        # out of flash half-way helps nobody.
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
        self._head(have)
        self._len = have
        self._since = None
        self._count = 0
        self.state = _FETCH if have < size else _CHECK
        if have < size:  # (all there already: the checksum's report follows)
            self._emit(_DOWNLOADING)
        return None

    def _head(self, index):
        # The running checksum of the index bytes on flash already: read back in small pieces.
        title, ver, size, text, alg = self._candidate  # pyright: ignore  (set before use)
        self._st = sha256() if alg in ("SHA256",) else 0
        if index:
            buf = bytearray(_PIECE)
            with open(_PKG, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    self._merge(memoryview(buf)[:n])
            self._log.info("ota", "resuming firmware %s at byte %d of %d", ver, index, size)
        else:
            self._log.info("ota", "downloading firmware %s (%d bytes, %s)", ver, size, alg)

    def _merge(self, data):
        if isinstance(self._st, int):
            self._st = crc32(data, self._st)
        else:
            self._st.update(data)

    def on_message(self, topic, msg):
        """A chunk or an error (queued by firmware/remote.py, handled from the main loop)."""
        try:
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
            self._merge(msg)
            self._len += want
            self._since = None
            self._count = 0
            self.failures = 0
            self._next_ms = self._hal.ticks_add(self._hal.ticks_ms(), _GAP_MS)
            if self._len == size:
                self.state = _CHECK
                self._emit(_DOWNLOADED)
        except MemoryError:
            self._short()

    # --- every main-loop step in the run state --------------------------------------------------

    def service(self, meter, link):
        """One piece of work. True when there is nothing left to do (remote.py unloads this)."""
        hal = self._hal
        if hal.ticks_diff(hal.ticks_ms(), self._next_ms) < 0:
            return False  # paced (_GAP_MS), or pausing after a MemoryError
        if self.failures >= _ASKS:
            self._log.warn("ota", "no room in the heap for the download; it resumes in the "
                           "next session")
            return True
        try:
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
                return True  # a firmware on trial: nothing new until it is confirmed (remote.py)
            if "done" in rec or "reason" in rec:
                self._show(rec)
                return False
            s = self.state
            if s == _FETCH:
                self._read(meter, link)
            elif s == _CHECK:
                self._parse()
            elif s == _SWITCH:
                self._set(meter, link)
            elif s == _WAIT:
                self.start()
            return s == _IDLE
        except MemoryError:
            self._short()
            return False

    def _show(self, obj):
        # The last update's result (obj: bootslot.py's record): confirmed by remote.py
        # (UPDATED), or given up by bootslot.py (FAILED: rolled back, or not unpacked).
        if "done" in obj:
            self._emit(_UPDATED, {"run": obj.get("run")})
            return
        self._log.error("ota", "firmware update failed: %s", obj["reason"])
        self._msg = ((_FAILED % json.dumps(obj["reason"])).encode(),
                     {"run": obj.get("run"), "stop": obj.get("stop")})

    def _read(self, meter, link):
        # Ask for the next chunk (paced by service()), readings first; again when none came.
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
        if len(meter.pipeline.queue):
            return  # a reading waits: a download never holds readings back
        link.publish((_REQUEST % (self.rid, self._len // _CHUNK)).encode(), b"%d" % _CHUNK, 1)
        self._since = hal.ticks_ms()

    def _parse(self):
        # The whole package against fw_checksum. The manifest and every file are checked when
        # the package is unpacked, at the next boot (bootslot.py).
        title, ver, size, text, alg = self._candidate  # pyright: ignore  (set before use)
        if not isinstance(self._st, int):
            got = hexlify(self._st.digest()).decode()
        else:
            c = self._st & 0xFFFFFFFF  # ThingsBoard writes the CRC's bytes little-endian (§14.4)
            got = hexlify(bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24))).decode()
        if got != text:
            self._fail("%s of the download does not match fw_checksum" % alg)
            return
        self.state = _SWITCH
        self._emit(_VERIFIED)

    def _set(self, meter, link):
        # The hand-over: bootslot.py unpacks the package into the slot that is not running at
        # the next boot, while the heap is still empty, checks every file against the manifest
        # and boots the new firmware on trial; the old slot stays as it is.
        title, ver, size, text, alg = self._candidate  # pyright: ignore  (set before use)
        self._store.write(_SLOT, {"run": self._rec.get("run") or 0, "new": ver, "name": title,
                                  "sum": text, "size": size})
        # power cut here: the next boot applies it all the same
        self._log.info("ota", "firmware %s verified; restarting to apply it", ver)
        try:
            link.publish(telemetry.TOPIC, _UPDATING, 1)
        except LinkError:
            pass  # the reset goes ahead: the new firmware reports for itself
        meter.reboot("firmware update")

    # --- reports ---------------------------------------------------------------------------------

    def _emit(self, payload, obj=None):
        # obj: the slot record to write once the report is acknowledged
        self._msg = (payload, obj)

    def _short(self):
        # A MemoryError in a step: whatever it left half done, flash holds whole chunks and
        # their record, so the download resumes from them after the pause (_WAIT), and the
        # candidate's start likewise; a report waiting (_msg) goes first.
        if self.state != _IDLE:
            self.state = _WAIT
        self._since = None
        self.failures += 1
        self._next_ms = self._hal.ticks_add(self._hal.ticks_ms(), _PAUSE_MS)
        try:
            self._log.warn("ota", "no room in the heap for the download (MemoryError); "
                           "resuming from flash in %d s", _PAUSE_MS // 1000)
        except MemoryError:
            pass  # the pause holds all the same

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
