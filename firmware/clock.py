# Time on the meter: an uptime that never wraps, and the wall-clock time of readings.
#
# Uptime. On the ESP32 ticks_ms wraps every 2**30 ms (12.4 days) and ticks_diff is only valid
# within half of that (docs/esp32.md: Clock and ticks). tick() runs every main-loop step and adds
# the short difference since the previous step to whole seconds (a small int for 34 years), so
# the uptime, and everything timed by it (health, the crash counter, re-syncs, log lines), never
# wraps.
#
# Wall-clock time. ThingsBoard wants Unix ms; the board's RTC reads 2000-01-01 after power-up
# until NTP answers. Every answer is checked before it moves the clock (firmware/sync.py): a
# well-formed reply to this very request, a date from 2025 to 2100 and, once synced, a step no
# larger than the RTC can have drifted (a minute, plus 1 ms per second since the last sync: 25
# times an ESP32 crystal's tolerance), unless three answers in a row insist (then the clock, set
# by a bad first answer, is what is wrong). The clock is synced again every ntp_interval_s and
# each correction is logged in ms; the HAL's clock between syncs is monotonic (on the board
# time.time_ns(), not whole seconds plus ticks: docs/esp32.md). Timestamps never go backwards:
# after a sync that moved the clock back they are held at the last one + 1 ms until the clock
# catches up (the step is the drift since the last sync: normally well under a second).
#
# Readings taken before the first sync. Their time is not known yet, so epoch_ms() gives them
# a negative value, -(this boot's id << 40 | uptime ms + 1), which resolve() turns into Unix ms
# once the clock is synced (the sync says when this boot's uptime 0 was). The id is random per
# boot: uptimes of an earlier boot that never synced cannot be placed in time (nobody knows how
# long the power was off), so such readings are dropped when their turn comes; every later
# reading carries the cumulative index, so no energy goes with them. While unsynced, a reading
# sent within 30 s of being taken goes without a timestamp (the server's arrival time is
# right to a second or so); one that waited offline is dropped rather than shown at replay time.

from micropython import const

_BOOT = const(1099511627776)  # 2**40: uptime ms below it (34 years), the boot id above it


class Clock:
    def __init__(self, hal, log, ntp_host, seconds, boot):
        """seconds: ntp_interval_s; boot: this boot's id, 0 to 2**20 - 1 (random)."""
        self._hal = hal
        self._log = log
        self._host = ntp_host
        self.boot = boot
        self.uptime_s = 0
        self._since = 0  # ms into the current second of uptime
        # Ticks at the last tick(). From the log's first tick (firmware/log.py, entry.py's first
        # line), so that the log's uptime and this one are the same once wired.
        self._prev_ms = log._t0
        self.synced = False  # an NTP answer was accepted this boot
        self._offset = 0  # Unix ms at uptime 0, known once synced
        self.last = 0  # the last timestamp handed out
        # For firmware/sync.py: [uptime of the next exchange, of the last accepted answer,
        # answers in a row not believed for their step, ntp_interval_s]
        self._ntp = [0, 0, 0, seconds]

    # --- uptime ------------------------------------------------------------------------------

    def tick(self, now):
        """Every main-loop step (ticks_diff must see less than 6.2 days between two calls).
        True when a new second of uptime began."""
        ms = self._since + self._hal.ticks_diff(now, self._prev_ms)
        self._prev_ms = now
        if ms < 1000:
            self._since = ms
            return False
        self.uptime_s += ms // 1000
        self._since = ms % 1000
        return True

    def uptime_ms(self):
        # A big int on the board after 12.4 days: used per reading and per log line only.
        hal = self._hal
        return self.uptime_s * 1000 + self._since + hal.ticks_diff(hal.ticks_ms(), self._prev_ms)

    # --- wall clock --------------------------------------------------------------------------

    def epoch_ms(self):
        """The timestamp of a reading taken now: Unix ms, above the last one handed out; before
        the first sync, this boot's id and uptime (negative; see resolve)."""
        if not self.synced:
            return -(self.boot * _BOOT + self.uptime_ms() + 1)
        t = self._hal.epoch_ms()
        if t <= self.last:
            t = self.last + 1  # the clock was moved back: hold until it catches up
        self.last = t
        return t

    def resolve(self, queue, n):
        """Up to n readings from the front of the queue, with the timestamps they are sent
        with, when some were taken before the clock was known (firmware/sync.py: resolve)."""
        from firmware import sync, unload
        try:
            return sync.resolve(self, queue, n)
        finally:
            unload("sync")

    # --- NTP ---------------------------------------------------------------------------------

    def sync_due(self):
        return self.uptime_s >= self._ntp[0]

    def sync(self):
        """One NTP exchange (blocks for at most the HAL's timeout). True when the clock was
        set (firmware/sync.py: ntp)."""
        from firmware import sync, unload
        try:
            return sync.ntp(self)
        finally:
            unload("sync")
