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
# Heap. This module holds what the download needs at every step (the chunks, the requests,
# the reports); the steps that run once or twice an update (checking the announcement and
# the flash, starting or resuming, the checksum, the hand-over, FAILED and UPDATED) are in
# firmware/ota_check.py, loaded for each and dropped at once: the download has about 4 KB
# more room (the run state has about 15 KB free at the e2e suite's heap). A MemoryError in
# any step here is caught here, never a reset (loading this module is firmware/remote.py's,
# which says "no room" and lets the next session try): one log line, nothing more for
# _PAUSE_MS, then the download resumes from flash as after a power cut (the file and its
# record are the truth; the checksum is rebuilt from the file). fw_state stays DOWNLOADING:
# a heap short for a moment is no reason for FAILED, which stops a package for good. At the
# start of a session's download, or after _ASKS pauses in a row with no chunk written, the
# module gives its heap back to metering for the rest of the session at once; the next
# session's announcement resumes it.
#
# Names: MicroPython interns every name for good (main.py), so the attributes and methods
# here reuse names the firmware has interned anyway; the comments say what each holds.

from binascii import crc32

from micropython import const

from firmware import telemetry, unload, version
from firmware.link import LinkError

# Bytes per request. umqtt reads a message in one allocation, and in the run state the heap's
# largest free piece can be as small as ~600 bytes (measured on the Unix port with the ESP32
# heap size, docs/benchmarks.md): 512 fits where 2048 does not.
_CHUNK = const(512)
_GAP_MS = const(100)  # between chunk requests: a few messages/s, well under TB's limits
_WAIT_MS = const(20000)  # for one chunk, before it is asked for again
_ASKS = const(3)  # asks for one chunk before the session is given up (reconnect, resume)
_PAUSE_MS = const(10000)  # after a MemoryError: the peak that caused it (a batch) is over
_PKG = const("ota/pkg.bin")
_SLOT = const("bootslot")  # bootslot.py's record (the module's name: interned anyway)
# Strings as long constants, bytes or constant tuples: MicroPython interns a short str literal.
_KEYS = const("fw_title fw_version fw_size fw_checksum fw_checksum_algorithm deleted")
_REQUEST = const("v2/fw/request/%d/chunk/%d")
_RESPONSE = const("v2/fw/response/%d/chunk/%d")
_ERROR = const(b"v2/fw/error")
_DOWNLOADED = const(b'{"fw_state":"DOWNLOADED"}')
# self.state (the same in firmware/ota_check.py)
_IDLE = const(0)
_FETCH = const(1)  # downloading
_CHECK = const(2)  # downloaded: the checksum
_SWITCH = const(3)  # verified: the slot record, then the reset
_WAIT = const(4)  # to be started, or resumed from flash after a MemoryError


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

    def update(self, obj):
        """obj: the fw_* shared attributes (pushed, or fetched at connect); {"deleted": [...]}
        withdraws the package."""
        try:
            log = self._log
            keys = _KEYS.split()
            gone = obj.get(keys[5])
            if isinstance(gone, list):
                if keys[0] in gone and self.state != _IDLE and self.state != _SWITCH:
                    self.state = _IDLE
                    self._candidate = None
                    log.warn("ota", "the package was withdrawn; download stopped")
                return
            if keys[0] not in obj:
                return  # other shared attributes
            cand = tuple(obj.get(k) for k in keys[:5])
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
            # Started by service(), after the attribute message that brought it is garbage.
            self.state = _WAIT
            self._next_ms = self._hal.ticks_ms()
        except MemoryError:
            self._short()

    def start(self, meter=None, link=None, why=None):
        """A step of firmware/ota_check.py, loaded for it: the start or resume (_WAIT), the
        checksum (_CHECK), the hand-over (_SWITCH), the last update's result, or (why) FAILED."""
        import gc
        gc.collect()  # the room garbage holds, before the module's load takes it in pieces
        from firmware import ota_check
        try:
            ota_check.run(self, meter, link, why)
        finally:
            unload("ota_check")

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
                self.start(None, None, "chunk %d has %d bytes, not %d: the package does not "
                           "match fw_size" % (n, len(msg), want))
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
        if self.failures >= _ASKS:
            try:
                self._log.warn("ota", "no room in the heap for the download; it resumes in "
                               "the next session")
            except MemoryError:
                pass
            return True  # unloaded: its heap back to metering
        hal = self._hal
        if hal.ticks_diff(hal.ticks_ms(), self._next_ms) < 0:
            return False  # paced (_GAP_MS), or pausing after a MemoryError
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
            s = self.state
            shown = "done" in rec or "reason" in rec  # the last update's result, to report first
            if s == _FETCH and not shown:
                self._read(meter, link)
            elif s != _IDLE or shown:
                self.start(meter, link)
                return False
            return s == _IDLE
        except MemoryError:
            self._short()
            return False

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

    # --- reports ---------------------------------------------------------------------------------

    def _emit(self, payload, obj=None):
        # obj: the slot record to write once the report is acknowledged
        self._msg = (payload, obj)

    def _short(self):
        # A MemoryError in a step: whatever it left half done, flash holds whole chunks and
        # their record, so the download resumes from them after the pause (_WAIT), and the
        # candidate's start likewise; a report waiting (_msg) goes first.
        # At the start (no checksum yet in this session) the heap has no room for a download
        # at all: this module gives it back at once (service()), as when it cannot load, so
        # that metering is not squeezed while it waits; during one, a peak is waited out.
        if self.state != _IDLE:
            self.state = _WAIT
        self._since = None
        self.failures = _ASKS if self._st is None else self.failures + 1
        self._next_ms = self._hal.ticks_add(self._hal.ticks_ms(), _PAUSE_MS)
        if self.failures < _ASKS:
            try:
                self._log.warn("ota", "no room in the heap for the download; "
                               "resuming from flash in %d s", _PAUSE_MS // 1000)
            except MemoryError:
                pass  # the pause holds all the same
