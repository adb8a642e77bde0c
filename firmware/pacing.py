# Client-side rate limiting, so that ThingsBoard never closes the session for rate.
#
# ThingsBoard Cloud enforces per-device limits on telemetry messages and on telemetry data
# points (keys), over several windows at once, and closes the connection when one is exceeded
# (docs/thingsboard.md §7; client attributes count as telemetry). The meter spends from
# token buckets sized at 80 % of the Free plan, the tightest one:
#   telemetry messages   50/s  600/min  7000/h   -> 40/s 480/min 5600/h
#   telemetry points    100/s 2000/min 15000/h   -> 80/s 1600/min 12000/h
# Live reporting uses a few percent of this; a replayed backlog is paced by it.

from micropython import const

_HOUR_MS = const(3600000)
_MIN_MS = const(60000)
_SEC_MS = const(1000)
# (capacity, window ms) for messages, then for data points
MESSAGES = ((40, _SEC_MS), (480, _MIN_MS), (5600, _HOUR_MS))
POINTS = ((80, _SEC_MS), (1600, _MIN_MS), (12000, _HOUR_MS))


class _Bucket:
    # Refills continuously at capacity per window, starting full (as bucket4j's greedy refill).
    # Integer arithmetic: a float here would be a heap allocation on every check. Whole tokens
    # are added as time passes; the remainder of the elapsed time is kept (t advances only by
    # the time the added tokens account for), so nothing is lost to rounding.
    def __init__(self, capacity, window_ms, now):
        self.capacity = capacity
        self.window_ms = window_ms
        self.tokens = capacity
        self.t = now

    def level(self, now, ticks_diff):
        dt = ticks_diff(now, self.t)
        if dt >= self.window_ms:
            self.tokens = self.capacity
            self.t = now
        elif dt > 0 and self.tokens < self.capacity:
            add = dt * self.capacity // self.window_ms
            if add:
                self.tokens = min(self.capacity, self.tokens + add)
                self.t = now - (dt - add * self.window_ms // self.capacity)
        elif self.tokens >= self.capacity:
            self.t = now  # full: idle time does not bank tokens beyond the capacity
        return self.tokens


class Pacer:
    def __init__(self, ticks_diff, now, messages=MESSAGES, points=POINTS):
        self._diff = ticks_diff
        self._msg = [_Bucket(c, w, now) for c, w in messages]
        self._pts = [_Bucket(c, w, now) for c, w in points]
        self.waits = 0  # times a send was held back, for status and tests

    def allow(self, points, now):
        """True (and the cost spent) when one message of `points` data points may go now."""
        for b in self._msg:
            if b.level(now, self._diff) < 1:
                self.waits += 1
                return False
        for b in self._pts:
            if b.level(now, self._diff) < points:
                self.waits += 1
                return False
        for b in self._msg:
            b.tokens -= 1
        for b in self._pts:
            b.tokens -= points
        return True
