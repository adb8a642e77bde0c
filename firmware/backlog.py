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

import os
import struct
from binascii import crc32

from micropython import const

from firmware.readings import ReadingQueue

_DIR = const("state/buf")
_REC = const(20)  # struct "<qqi"
_CHUNK_MAX = const(120)  # readings per chunk file: 2.4 KB, one LittleFS block
_SPILL = const(20)  # readings moved to flash at a time
_FILES_MAX = const(48)  # chunk files before neighbours are merged


class Backlog:
    def __init__(self, log, max_points, ram_capacity=32, files_max=_FILES_MAX):
        self._log = log
        self._ram = ReadingQueue(ram_capacity)
        self.max_points = max_points
        self.files_max = files_max
        self._files = []  # [seq, count], oldest first
        self._offset = 0  # readings of the oldest chunk already acknowledged (RAM only)
        self._rec = bytearray(_REC)
        self.writes = 0  # flash writes, for status and benchmarks
        self.thinned = 0  # readings dropped by thinning since boot

    # --- boot --------------------------------------------------------------------------------

    def load(self):
        """Find the chunk files a previous boot left, oldest first; drop unreadable ones."""
        try:
            names = os.listdir(_DIR)
        except OSError:
            return
        seqs = []
        for n in names:
            if n.endswith(".bin"):
                try:
                    seqs.append(int(n[:-4], 16))
                except ValueError:
                    pass
            elif n.endswith(".tmp"):
                self._rm(_DIR + "/" + n)  # a spill cut short: the .bin beside it is intact
        seqs.sort()
        for seq in seqs:
            count = self._check(seq)
            if count:
                self._files.append([seq, count])
            else:
                self._log.warn("backlog", "chunk %08x unreadable; discarded", seq)
                self._rm(self._path(seq))
        if self._files:
            self._log.info("backlog", "%d readings from before the reset wait on flash", len(self))

    # --- queue interface (firmware/readings.py) ------------------------------------------------

    def __len__(self):
        return sum(c for _s, c in self._files) - self._offset + len(self._ram)

    def flash_points(self):
        return sum(c for _s, c in self._files) - self._offset

    def push(self, ts, index, power_dw):
        ram = self._ram
        ram.push(ts, index, power_dw)
        if len(ram) >= _SPILL:
            self._spill(ram.peek(_SPILL))
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
        except OSError:
            pass

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

    def _check(self, seq):
        # Returns the number of readings in a chunk whose crc matches, else 0.
        try:
            size = os.stat(self._path(seq))[6]
            if size < _REC + 4 or (size - 4) % _REC:
                return 0
            crc = 0
            with open(self._path(seq), "rb") as f:
                for _ in range((size - 4) // _REC):
                    f.readinto(self._rec)
                    crc = crc32(self._rec, crc)
                tail = f.read(4)
            if struct.unpack("<I", tail)[0] != crc & 0xFFFFFFFF:
                return 0
            return (size - 4) // _REC
        except (OSError, ValueError):
            return 0

    def _write_chunk(self, seq, old_records, old_start, new):
        # Writes old_records (a range of an existing chunk, copied record by record) followed
        # by the new readings to <seq>.tmp, then renames it over <seq>.bin.
        try:
            os.mkdir("state")
        except OSError:
            pass
        try:
            os.mkdir(_DIR)
        except OSError:
            pass
        tmp = self._path(seq, ".tmp")
        crc = 0
        count = 0
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
        self.writes += 1
        return count

    def _spill(self, readings):
        files = self._files
        if files and files[-1][1] + len(readings) <= _CHUNK_MAX:
            # Append to the newest chunk. Records keep their positions, so the replay offset of
            # the oldest chunk stays valid.
            seq, count = files[-1]
            files[-1][1] = self._write_chunk(seq, (seq, range(count)), 0, readings)
        else:
            seq = files[-1][0] + 1 if files else 1
            files.append([seq, self._write_chunk(seq, None, 0, readings)])
        while self.flash_points() > self.max_points:
            if not self._thin():
                break
        while len(files) > self.files_max:
            if not self._merge():
                break

    def _thin(self):
        # Halve the oldest chunk that still has 3 or more readings, keeping its last one.
        for k, (seq, count) in enumerate(self._files):
            start = self._offset if k == 0 else 0
            n = count - start
            if n < 3:
                continue
            keep = [i for i in range(n) if i % 2 == 0 or i == n - 1]
            kept = self._write_chunk(seq, (seq, keep), start, ())
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
            files[k][1] = self._write_chunk(seq, (seq, range(count - start)), start,
                                            self._read(seq2, 0, count2))
            if k == 0:
                self._offset = 0
            files.pop(k + 1)
            self._rm(self._path(seq2))
            return True
        return False
