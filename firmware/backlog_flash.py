# The backlog's file work that runs rarely (firmware/backlog.py): at boot, what a previous boot
# left on flash and how many readings this flash can hold; on a full filesystem, what goes.
# Backlog.load() and Backlog.discard() import it for that moment and unload it again: the
# resident backlog keeps only what runs while the meter reports.

import os
import struct
from binascii import crc32

from micropython import const

_DIR = const("state/buf")  # as firmware/backlog.py
_REC = const(20)
_CHUNK_MAX = const(120)
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
            queue._rm(_DIR + "/" + n)  # a spill cut short: the .bin beside it is intact
    seqs.sort()
    for seq in seqs:
        count = _check(queue, seq)
        if count:
            queue._files.append([seq, count])
        else:
            queue._log.warn("backlog", "chunk %08x unreadable; discarded", seq)
            queue._rm(queue._path(seq))
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
        size = os.stat(queue._path(seq))[6]
        if size < _REC + 4 or (size - 4) % _REC:
            return 0
        crc = 0
        with open(queue._path(seq), "rb") as f:
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
    # ENOSPC although the bound said it fits (other files grew, the chip lost blocks): the
    # oldest chunk goes whole (removing needs no free block; thinning would), and the backlog
    # is bounded by what it holds now: at rest its file count less 2, so that a new chunk and
    # the copy a thin or merge writes still fit (thinning keeps max(files_max,
    # max_points / _CHUNK_MAX + 1) files).
    files = queue._files
    blocks = len(files)  # what the backlog has: the write that needed one more was refused
    seq, count = files.pop(0)
    count -= queue._offset
    queue.thinned += count
    queue._offset = 0
    queue._rm(queue._path(seq))
    if blocks - 2 < queue.files_max:
        queue.files_max = max(1, blocks - 2)
        queue.max_points = min(queue.max_points, max(0, blocks - 3) * _CHUNK_MAX)
        queue._log.warn("backlog", "flash full: %d oldest readings dropped; up to %d from now on",
                        count, queue.max_points)
