# Readings waiting to be sent, kept through outages and power cuts.
#
# New readings go to a small RAM ring (firmware/readings.py). When it holds a spill's worth
# (the server is unreachable: online, readings leave within a publish interval) they move to
# flash, into chunk files state/buf/<seq>.bin of fixed 20-byte records (ts ms, pulse index,
# power dW) followed by a crc32. A spill appends to the newest chunk by writing the whole new
# chunk to a .tmp and renaming it over the old one, so a power cut leaves either the old chunk
# or the new one; a chunk with a bad crc (bit rot) is discarded with a log line.
#
# Replay is oldest first: chunk files in sequence order, then the RAM ring. A reading leaves
# only after its PUBACK (drop() is called then). A power cut during replay sends the chunk
# again: at least once, and ThingsBoard keeps one value per key and timestamp.
#
# Bounded: past max_points on flash, the oldest chunk is thinned (every other reading dropped,
# its last one kept), then the next oldest. Never the newest readings, and never energy: every
# reading carries the cumulative index, so fewer old points only means coarser old power.
# Thinning leaves the oldest chunks with a few readings each; past files_max chunk files,
# neighbours that fit in one chunk are merged, so a months-long outage cannot grow the number
# of files (and the list of them in RAM) without bound.
#
# Bounded by the flash too: each chunk file takes a whole LittleFS block (4 KB), so at boot
# max_points comes down to what the free space holds, less a reserve for other files
# (firmware/backlog_flash.py; README: offline buffering).
#
# The flash may still refuse a write (OSError). Never a reason to reset:
# - ENOSPC (full although the bound said it fits: other files grew): the oldest chunk goes
#   whole (removing needs no free block; thinning would) and the bound comes down to what is
#   left, so later spills thin instead of meeting a full filesystem again;
# - EIO (a worn or failing chip): the readings stay in the RAM ring, which keeps the newest
#   (firmware/readings.py); the next reading tries the spill again, so a failing chip sees at
#   most one chunk write per publish_interval_s, and spills resume when the chip works again.
# A refused thin or merge is tried again at the next spill; a refused remove leaves a file that
# the next boot replays (at least once). `errors` counts refusals (health: flash_errors).

import os
import struct
from binascii import crc32

from micropython import const

from firmware import unload
from firmware.readings import ReadingQueue

_DIR = const("state/buf")
_REC = const(20)  # struct "<qqi"
_CHUNK_MAX = const(120)  # readings per chunk file: 2.4 KB, one LittleFS block
_SPILL = const(20)  # readings moved to flash at a time
_FILES_MAX = const(48)  # chunk files before neighbours are merged
_RAM = const(32)  # readings in the RAM ring
_ENOENT = const(2)
_EEXIST = const(17)
_ENOSPC = const(28)


class Backlog:
    def __init__(self, log, max_points, files_max=_FILES_MAX):
        self._log = log
        self._ram = ReadingQueue(_RAM)
        self.max_points = max_points
        self.files_max = files_max
        self._files = []  # [seq, count], oldest first
        self._offset = 0  # readings of the oldest chunk already acknowledged (RAM only)
        self._rec = bytearray(_REC)
        self.writes = 0  # flash writes, for status and benchmarks
        self.thinned = 0  # readings dropped by thinning since boot
        self.errors = 0  # writes the flash refused since boot (health: flash_errors)

    # --- boot --------------------------------------------------------------------------------

    def load(self):
        """At boot: find the chunk files a previous boot left and bound max_points by what the
        flash holds (firmware/backlog_flash.py, loaded for this only)."""
        from firmware import backlog_flash
        backlog_flash.load(self)
        unload("backlog_flash")

    # --- queue interface (firmware/readings.py) ------------------------------------------------

    def __len__(self):
        # Asked at every main-loop step (the pipeline): with no chunk on flash, the usual case,
        # no generator is made (192 bytes of garbage a step).
        if not self._files:
            return len(self._ram)
        return self.flash_points() + len(self._ram)

    def flash_points(self):
        return sum(c for _s, c in self._files) - self._offset

    def push(self, ts, index, power_dw):
        ram = self._ram
        ram.push(ts, index, power_dw)
        # max_points 0: nothing fits on flash (a full filesystem at boot); the ring keeps the
        # newest readings.
        if len(ram) >= _SPILL and self.max_points and self._spill(ram.peek(_SPILL)):
            if len(ram) > _SPILL:  # the spill was overdue: the flash had refused it
                self._log.info("backlog", "flash writes work again")
            ram.drop(_SPILL)

    def peek(self, n):
        if self._files:
            seq, count = self._files[0]
            return self._read(seq, self._offset, min(n, count - self._offset))
        return self._ram.peek(n)

    def drop(self, n):
        if self._files:
            self._offset += n
            seq, count = self._files[0]
            if self._offset >= count:
                self._files.pop(0)
                self._offset = 0
                self._rm(self._path(seq))
            return
        self._ram.drop(n)

    # --- flash ---------------------------------------------------------------------------------

    def _path(self, seq, ext=".bin"):
        return "%s/%08x%s" % (_DIR, seq, ext)

    def _rm(self, path):
        try:
            os.remove(path)
        except OSError as e:
            if not e.args or e.args[0] != _ENOENT:
                self._fail(e)

    def _fail(self, e):
        # One line when a spill's worth waits in RAM for the first time (the next readings try
        # again quietly); ENOSPC is handled, and logged, by discard(). Returns the error number.
        self.errors += 1
        err = e.args[0]
        if err != _ENOSPC and len(self._ram) == _SPILL:
            self._log.error("backlog", "flash write failed (%s): readings wait in RAM", e)
        return err

    def _read(self, seq, start, n):
        out = []
        try:
            with open(self._path(seq), "rb") as f:
                f.seek(start * _REC)
                for _ in range(n):
                    if f.readinto(self._rec) != _REC:
                        break
                    out.append(struct.unpack("<qqi", self._rec))
        except OSError:
            pass
        return out

    def _write_chunk(self, seq, old_records, old_start, new):
        # Writes old_records (a range of an existing chunk, copied record by record) followed
        # by the new readings to <seq>.tmp, then renames it over <seq>.bin. Returns the number
        # of readings in the chunk, or minus the error number when the flash refused it (the
        # old chunk, if any, is then intact).
        tmp = self._path(seq, ".tmp")
        crc = 0
        count = 0
        try:
            for d in ("state", _DIR):
                try:
                    os.mkdir(d)
                except OSError as e:
                    if e.args[0] != _EEXIST:
                        raise  # the flash refused the directory: say why, not ENOENT below
            with open(tmp, "wb") as f:
                if old_records:
                    src_seq, keep = old_records
                    with open(self._path(src_seq), "rb") as src:
                        for i in keep:
                            src.seek((old_start + i) * _REC)
                            src.readinto(self._rec)
                            f.write(self._rec)
                            crc = crc32(self._rec, crc)
                            count += 1
                for r in new:
                    struct.pack_into("<qqi", self._rec, 0, r[0], r[1], r[2])
                    f.write(self._rec)
                    crc = crc32(self._rec, crc)
                    count += 1
                f.write(struct.pack("<I", crc & 0xFFFFFFFF))
            # power cut here: the previous chunk (if any) is intact, the .tmp is cleaned at boot
            os.rename(tmp, self._path(seq))
        except OSError as e:
            try:
                os.remove(tmp)  # a half-written copy must not hold a full filesystem's last block
            except OSError:
                pass
            return -self._fail(e)
        self.writes += 1
        return count

    def _spill(self, readings):
        # True when the readings are on flash.
        files = self._files
        for attempt in range(2):  # once more after making room on a full filesystem
            if files and files[-1][1] + len(readings) <= _CHUNK_MAX:
                # Append to the newest chunk. Records keep their positions, so the replay offset
                # of the oldest chunk stays valid.
                seq, count = files[-1]
                n = self._write_chunk(seq, (seq, range(count)), 0, readings)
                if n > 0:
                    files[-1][1] = n
            else:
                seq = files[-1][0] + 1 if files else 1
                n = self._write_chunk(seq, None, 0, readings)
                if n > 0:
                    files.append([seq, n])
            if n > 0:
                break
            if attempt or n != -_ENOSPC or not self.discard():
                return False
        while self.flash_points() > self.max_points:
            if not self._thin():
                break
        while len(files) > self.files_max:
            if not self._merge():
                break
        return True

    def discard(self):
        """The filesystem is full: drop the oldest chunk (never the newest) and bound the
        backlog by what it holds now (firmware/backlog_flash.py, loaded for this only). False
        when there is nothing to drop, or no room to load that code: the readings then wait in
        RAM, as for a refused write."""
        if len(self._files) < 2:
            return False
        try:
            from firmware import backlog_flash
        except MemoryError:
            return False
        backlog_flash.discard(self)
        unload("backlog_flash")
        return True

    def _thin(self):
        # Halve the oldest chunk that still has 3 or more readings, keeping its last one.
        for k, (seq, count) in enumerate(self._files):
            start = self._offset if k == 0 else 0
            n = count - start
            if n < 3:
                continue
            keep = [i for i in range(n) if i % 2 == 0 or i == n - 1]
            kept = self._write_chunk(seq, (seq, keep), start, ())
            if kept < 0:
                # Thinning writes a copy first: on a full filesystem, drop the oldest instead.
                return kept == -_ENOSPC and self.discard()
            if k == 0:
                self._offset = 0
            self.thinned += n - kept
            self._files[k][1] = kept
            return True
        # Only tiny chunks left: drop the oldest whole (later readings still carry the energy).
        if len(self._files) > 1:
            seq, count = self._files.pop(0)
            self.thinned += count - self._offset
            self._offset = 0
            self._rm(self._path(seq))
            return True
        return False

    def _merge(self):
        # Merge the oldest two neighbouring chunks that fit in one: the later one's readings
        # are appended to the earlier (atomically, as a spill), then its file is removed. A
        # power cut between the two leaves both: those readings are sent twice (at least once;
        # ThingsBoard keeps one value per key and timestamp).
        files = self._files
        for k in range(len(files) - 1):
            (seq, count), (seq2, count2) = files[k], files[k + 1]
            start = self._offset if k == 0 else 0
            if count - start + count2 > _CHUNK_MAX:
                continue
            n = self._write_chunk(seq, (seq, range(count - start)), start,
                                  self._read(seq2, 0, count2))
            if n < 0:
                return False  # both chunks intact; tried again at the next spill
            files[k][1] = n
            if k == 0:
                self._offset = 0
            files.pop(k + 1)
            self._rm(self._path(seq2))
            return True
        return False
