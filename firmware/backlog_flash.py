# The backlog's flash half (firmware/backlog.py says how the chunk files work): at boot, what a
# previous boot left on flash and how many readings this flash can hold; during an outage, the
# spills, the replay's reads, thinning, merging, and what goes on a full filesystem. The
# Backlog imports it at boot and at the first spill, and unloads it once nothing is on flash
# and the ring holds less than a spill: the resident backlog keeps only its RAM ring. Functions
# of the Backlog (queue), not a class: its state (the chunk list, the counters) lives in the
# Backlog, which outlasts this module.

import os
import struct
from binascii import crc32

from micropython import const

_DIR = const("state/buf")
_REC = const(20)  # struct "<qqi"; the Backlog's record buffer is this long
_CHUNK_MAX = const(120)  # readings per chunk file: 2.4 KB, one LittleFS block
_SPILL = const(20)  # readings moved to flash at a time (firmware/backlog.py)
_ENOENT = const(2)
_EEXIST = const(17)
_ENOSPC = const(28)
# Flash kept free of offline readings for what else lives there: the records (firmware/store.py,
# a few blocks with their directories), LittleFS's copy-on-write headroom, and a staged
# firmware update (the firmware takes 35 blocks, 140 KB, on flash today: room for it to double).
_RESERVE_KB = const(320)


def load(queue):
    """Find the chunk files a previous boot left for this Backlog, oldest first (unreadable
    ones are dropped), then bound its max_points by what the filesystem holds."""
    try:
        names = os.listdir(_DIR)
    except OSError:
        names = ()
    seqs = []
    for n in names:
        if n.endswith(".bin"):
            try:
                seqs.append(int(n[:-4], 16))
            except ValueError:
                pass
        elif n.endswith(".tmp"):
            _rm(queue, _DIR + "/" + n)  # a spill cut short: the .bin beside it is intact
    seqs.sort()
    for seq in seqs:
        count = _check(queue, seq)
        if count:
            queue._files.append([seq, count])
        else:
            queue._log.warn("backlog", "chunk %08x unreadable; discarded", seq)
            _rm(queue, _path(seq))
    if queue._files:
        queue._log.info("backlog", "%d readings from before the reset wait on flash", len(queue))
    # A chunk file takes a whole block (2404 bytes in LittleFS's 4 KB), and directory entries
    # about 1/16 more (measured on the Unix port's LittleFS: 473 chunk files filled 501 free
    # blocks). The backlog may fill the free blocks and those its files hold already, less
    # _RESERVE_KB; one block stays free for the copy a spill, thin or merge writes before its
    # rename, and the newest chunk may be partly filled. Thinning leaves the oldest chunks with
    # a few readings each, so the file count can reach files_max whatever max_points is: that
    # is bounded too. Logged once a boot: the bound that applies.
    try:
        st = os.statvfs(".")
    except (AttributeError, OSError):
        return
    unit = st[1]  # what the counts count (LittleFS: its block)
    free = st[4] if st[4] <= st[2] else 0  # LittleFS overcounts use when full (wraps)
    per = (_CHUNK_MAX * _REC + 4 + unit - 1) // unit
    room = free + len(queue._files) * per - _RESERVE_KB * 1024 // unit
    chunks = room * 15 // 16 // per - 1
    fit = max(0, (chunks - 1) * _CHUNK_MAX)
    log = queue._log.info
    if fit < queue.max_points:
        queue.files_max = max(1, min(queue.files_max, chunks))
        log = queue._log.warn
    else:
        fit = queue.max_points
    log("backlog", "up to %d readings on flash (buffer_points %d; %d KB free, %d KB kept for "
        "other files)", fit, queue.max_points, free * unit // 1024, _RESERVE_KB)
    queue.max_points = fit


def _check(queue, seq):
    # Returns the number of readings in a chunk whose crc matches, else 0.
    try:
        size = os.stat(_path(seq))[6]
        if size < _REC + 4 or (size - 4) % _REC:
            return 0
        crc = 0
        with open(_path(seq), "rb") as f:
            for _ in range((size - 4) // _REC):
                f.readinto(queue._rec)
                crc = crc32(queue._rec, crc)
            tail = f.read(4)
        if struct.unpack("<I", tail)[0] != crc & 0xFFFFFFFF:
            return 0
        return (size - 4) // _REC
    except (OSError, ValueError):
        return 0


def discard(queue):
    # The filesystem is full: drop the oldest chunk (never the newest). False when there is
    # nothing to drop (the readings then wait in RAM, as for a refused write).
    #
    # ENOSPC although the bound said it fits (other files grew, the chip lost blocks): the
    # oldest chunk goes whole (removing needs no free block; thinning would), and the backlog
    # is bounded by what it holds now: at rest its file count less 2, so that a new chunk and
    # the copy a thin or merge writes still fit (thinning keeps max(files_max,
    # max_points / _CHUNK_MAX + 1) files).
    files = queue._files
    if len(files) < 2:
        return False
    blocks = len(files)  # what the backlog has: the write that needed one more was refused
    seq, count = files.pop(0)
    count -= queue._offset
    queue.thinned += count
    queue._offset = 0
    _rm(queue, _path(seq))
    if blocks - 2 < queue.files_max:
        queue.files_max = max(1, blocks - 2)
        queue.max_points = min(queue.max_points, max(0, blocks - 3) * _CHUNK_MAX)
        queue._log.warn("backlog", "flash full: %d oldest readings dropped; up to %d from now on",
                        count, queue.max_points)
    return True


# --- during an outage: spill, replay, remove ---------------------------------------------

def push(queue, readings):
    """Spill readings (the ring's oldest) to flash; True when they are there."""
    files = queue._files
    for attempt in range(2):  # once more after making room on a full filesystem
        if files and files[-1][1] + len(readings) <= _CHUNK_MAX:
            # Append to the newest chunk. Records keep their positions, so the replay offset
            # of the oldest chunk stays valid.
            seq, count = files[-1]
            n = _write_chunk(queue, seq, (seq, range(count)), 0, readings)
            if n > 0:
                files[-1][1] = n
        else:
            seq = files[-1][0] + 1 if files else 1
            n = _write_chunk(queue, seq, None, 0, readings)
            if n > 0:
                files.append([seq, n])
        if n > 0:
            break
        if attempt or n != -_ENOSPC or not discard(queue):
            return False
    while queue.flash_points() > queue.max_points:
        if not _thin(queue):
            break
    while len(files) > queue.files_max:
        if not _merge(queue):
            break
    return True


def read(queue, seq, start, n):
    """Up to n readings of chunk seq from record start on ([] when it cannot be read)."""
    out = []
    try:
        with open(_path(seq), "rb") as f:
            f.seek(start * _REC)
            for _ in range(n):
                if f.readinto(queue._rec) != _REC:
                    break
                out.append(struct.unpack("<qqi", queue._rec))
    except OSError:
        pass
    return out


def remove(queue, seq):
    """The chunk seq is acknowledged: its file goes (a refused remove leaves it for the next
    boot to replay: at least once)."""
    _rm(queue, _path(seq))


def _path(seq, ext=".bin"):
    return "%s/%08x%s" % (_DIR, seq, ext)


def _rm(queue, path):
    try:
        os.remove(path)
    except OSError as e:
        if not e.args or e.args[0] != _ENOENT:
            _fail(queue, e)


def _fail(queue, e):
    # One line when a spill's worth waits in RAM for the first time (the next readings try
    # again quietly); ENOSPC is handled, and logged, by discard(). Returns the error number.
    queue.errors += 1
    err = e.args[0]
    if err != _ENOSPC and len(queue._ram) == _SPILL:
        queue._log.error("backlog", "flash write failed (%s): readings wait in RAM", e)
    return err


def _write_chunk(queue, seq, copy, start, new):
    # Writes the records copy names ((chunk, indices from record start on), copied record by
    # record; None: none) followed by the new readings to <seq>.tmp, then renames it over
    # <seq>.bin. (Parameter names are interned: these are names MicroPython has anyway.) Returns the number
    # of readings in the chunk, or minus the error number when the flash refused it (the
    # old chunk, if any, is then intact).
    tmp = _path(seq, ".tmp")
    rec = queue._rec
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
            if copy:
                src_seq, keep = copy
                with open(_path(src_seq), "rb") as src:
                    for i in keep:
                        src.seek((start + i) * _REC)
                        src.readinto(rec)
                        f.write(rec)
                        crc = crc32(rec, crc)
                        count += 1
            for r in new:
                struct.pack_into("<qqi", rec, 0, r[0], r[1], r[2])
                f.write(rec)
                crc = crc32(rec, crc)
                count += 1
            f.write(struct.pack("<I", crc & 0xFFFFFFFF))
        # power cut here: the previous chunk (if any) is intact, the .tmp is cleaned at boot
        os.rename(tmp, _path(seq))
    except OSError as e:
        try:
            os.remove(tmp)  # a half-written copy must not hold a full filesystem's last block
        except OSError:
            pass
        return -_fail(queue, e)
    queue.writes += 1
    return count


def _thin(queue):
    # Halve the oldest chunk that still has 3 or more readings, keeping its last one.
    files = queue._files
    for k, (seq, count) in enumerate(files):
        start = queue._offset if k == 0 else 0
        n = count - start
        if n < 3:
            continue
        keep = [i for i in range(n) if i % 2 == 0 or i == n - 1]
        kept = _write_chunk(queue, seq, (seq, keep), start, ())
        if kept < 0:
            # Thinning writes a copy first: on a full filesystem, drop the oldest instead.
            return kept == -_ENOSPC and discard(queue)
        if k == 0:
            queue._offset = 0
        queue.thinned += n - kept
        files[k][1] = kept
        return True
    # Only tiny chunks left: drop the oldest whole (later readings still carry the energy).
    if len(files) > 1:
        seq, count = files.pop(0)
        queue.thinned += count - queue._offset
        queue._offset = 0
        _rm(queue, _path(seq))
        return True
    return False


def _merge(queue):
    # Merge the oldest two neighbouring chunks that fit in one: the later one's readings
    # are appended to the earlier (atomically, as a spill), then its file is removed. A
    # power cut between the two leaves both: those readings are sent twice (at least once;
    # ThingsBoard keeps one value per key and timestamp).
    files = queue._files
    for k in range(len(files) - 1):
        (seq, count), (seq2, count2) = files[k], files[k + 1]
        start = queue._offset if k == 0 else 0
        if count - start + count2 > _CHUNK_MAX:
            continue
        n = _write_chunk(queue, seq, (seq, range(count - start)), start,
                         read(queue, seq2, 0, count2))
        if n < 0:
            return False  # both chunks intact; tried again at the next spill
        files[k][1] = n
        if k == 0:
            queue._offset = 0
        files.pop(k + 1)
        _rm(queue, _path(seq2))
        return True
    return False
