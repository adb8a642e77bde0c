# Wall-clock time for readings. ThingsBoard wants Unix milliseconds; the board's RTC is only
# right once NTP answered. Before that, readings carry no timestamp (0) and the server stamps
# them on arrival.

from micropython import const

_RESYNC_MS = const(3600000)  # retry pace while no sync has succeeded yet


class Clock:
    def __init__(self, hal, log, ntp_host):
        self._hal = hal
        self._log = log
        self._host = ntp_host
        self.synced = False
        self._next_ms = 0

    def sync(self, now_ms):
        """One NTP attempt. True when it answered."""
        hal = self._hal
        ok = hal.sync_time(self._host)
        self._next_ms = hal.ticks_add(now_ms, _RESYNC_MS)
        if ok and not self.synced:
            self._log.info("time", "synced: %d", hal.epoch_ms() // 1000)
        self.synced = self.synced or ok
        return ok

    def sync_due(self, now_ms):
        return not self.synced and self._hal.ticks_diff(now_ms, self._next_ms) >= 0

    def epoch_ms(self):
        """Unix ms for a reading, or 0 while the clock is not known."""
        return self._hal.epoch_ms() if self.synced else 0
