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
# (README: offline buffering).
#
# Only the RAM ring is resident. The flash half (chunk files: boot scan, spill, read, thin,
# merge, full filesystem) is firmware/backlog_flash.py, imported at boot for the scan and at
# the first spill of an outage, and unloaded again when no chunk is left on flash and the ring
# holds less than a spill's worth: online, readings leave within a publish interval and the
# meter never needs that code (about 2.7 KB of heap back, docs/benchmarks.md). Its names stay
# interned either way (they are counted in the budget, tests/unix). When there is no room to
# load it (MemoryError), the readings wait in the RAM ring as for a refused write, and the next
# reading tries again: the ring holds 32, so 12 publish intervals of trying before the oldest
# one goes (its energy is in the newer readings' index).
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

from micropython import const

from firmware import unload
from firmware.readings import ReadingQueue

_SPILL = const(20)  # readings moved to flash at a time
_FILES_MAX = const(48)  # chunk files before neighbours are merged
_RAM = const(32)  # readings in the RAM ring


class Backlog:
    def __init__(self, log, max_points, files_max=_FILES_MAX):
        self._log = log
        self._ram = ReadingQueue(_RAM)
        self.max_points = max_points
        self.files_max = files_max
        self._files = []  # [seq, count], oldest first
        self._offset = 0  # readings of the oldest chunk already acknowledged (RAM only)
        self._rec = None  # one record's buffer, while the flash half is loaded
        # firmware/backlog_flash.py while it is loaded, else None. (Named as the module: a
        # name interned anyway, tests/unix's budget.)
        self.backlog_flash = None
        self.writes = 0  # flash writes, for status and benchmarks
        self.thinned = 0  # readings dropped by thinning since boot
        self.errors = 0  # writes the flash refused since boot (health: flash_errors)

    # --- boot --------------------------------------------------------------------------------

    def load(self):
        """At boot: find the chunk files a previous boot left and bound max_points by what the
        flash holds. The flash half stays loaded only if chunks wait on flash."""
        flash = self._flash_code()
        if flash is None:
            # No room for the code even at boot: nothing goes to flash this boot (a spill to
            # chunk 1 could overwrite one a previous boot left), the ring keeps the newest
            # readings, and the chunks wait for the next boot.
            self.max_points = 0
            self._log.error("backlog", "no memory to load the flash code: offline readings "
                            "stay in RAM this boot")
            return
        flash.load(self)
        self.drop(0)  # unloads the flash half again if no chunk waits on flash

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
        if len(ram) >= _SPILL and self.max_points:
            flash = self.backlog_flash or self._flash_code()
            if flash is not None and flash.push(self, ram.peek(_SPILL)):
                if len(ram) > _SPILL:  # the spill was overdue: the flash had refused it
                    self._log.info("backlog", "flash writes work again")
                ram.drop(_SPILL)

    def peek(self, n):
        if self._files:
            seq, count = self._files[0]
            return self.backlog_flash.read(self, seq, self._offset, min(n, count - self._offset))
        return self._ram.peek(n)

    def drop(self, n):
        if self._files:
            self._offset += n
            seq, count = self._files[0]
            if self._offset >= count:
                self._files.pop(0)
                self._offset = 0
                self.backlog_flash.remove(self, seq)
        else:
            self._ram.drop(n)
        # The flash half leaves when it has nothing to do: no chunk on flash, and less than a
        # spill's worth in the ring (an outage's next spill loads it again).
        if self.backlog_flash is not None and not self._files and len(self._ram) < _SPILL:
            self.backlog_flash = self._rec = None
            unload("backlog_flash")

    # --- the flash half, loaded while it has work --------------------------------------------

    def _flash_code(self):
        # Imported into a collected heap (its bytecode wants one free block); None when there
        # is no room for it now: a spill then waits in RAM, logged once per spell as a refused
        # write is (not counted in errors: the flash refused nothing).
        import gc
        gc.collect()
        try:
            from firmware import backlog_flash
            self._rec = bytearray(20)  # one record (backlog_flash._REC): reads, writes reuse it
        except MemoryError:
            unload("backlog_flash")  # a module cut short by it must not be found next time
            if len(self._ram) == _SPILL:
                self._log.error("backlog", "flash writes wait: no memory to load their code; "
                                "readings wait in RAM")
            return None
        self.backlog_flash = backlog_flash
        return backlog_flash
