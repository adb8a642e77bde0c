# Client-side rate limiting, so that ThingsBoard never closes the session for rate.
#
# ThingsBoard Cloud enforces per-device limits on telemetry messages and on telemetry data
# points (keys), over several windows at once, and closes the connection when one is exceeded
# (docs/thingsboard.md §7; client attributes count as telemetry). The meter spends from
# token buckets sized at 80 % of the Free plan, the tightest one:
#   telemetry messages   50/s  600/min  7000/h   -> 40/s 480/min 5600/h
#   telemetry points    100/s 2000/min 15000/h   -> 80/s 1600/min 12000/h
# Live reporting uses a few percent of this; a replayed backlog is paced by it.

from array import array

from micropython import const

_HOUR_MS = const(3600000)
_MIN_MS = const(60000)
_SEC_MS = const(1000)
# Six buckets: messages (0-2), then data points (3-5).
_CAPACITY = const((40, 480, 5600, 80, 1600, 12000))
_WINDOW_MS = const((_SEC_MS, _MIN_MS, _HOUR_MS, _SEC_MS, _MIN_MS, _HOUR_MS))
_N = const(6)
_MESSAGE_BUCKETS = const(3)


class Pacer:
    # Each bucket refills continuously at its capacity per window, starting full (as bucket4j's
    # greedy refill). Integer arithmetic in preallocated arrays: a check allocates nothing.
    # Whole tokens are added as time passes; the remainder of the elapsed time is kept (the
    # bucket's tick advances only by the time the added tokens account for), so nothing is lost
    # to rounding.
    def __init__(self, ticks_diff, now):
        self._diff = ticks_diff
        self.tokens = array("l", _CAPACITY)
        self._since = array("l", [now] * _N)  # the tick each bucket's tokens were counted at
        self.waits = 0  # times a send was held back, for status and tests

    def level(self, i, now):
        tokens, since = self.tokens, self._since
        cap, window = _CAPACITY[i], _WINDOW_MS[i]
        dt = self._diff(now, since[i])
        if dt >= window:
            tokens[i] = cap
            since[i] = now
        elif dt > 0 and tokens[i] < cap:
            add = dt * cap // window
            if add:
                tokens[i] = min(cap, tokens[i] + add)
                since[i] = now - (dt - add * window // cap)
        elif tokens[i] >= cap:
            since[i] = now  # full: idle time does not bank tokens beyond the capacity
        return tokens[i]

    def tick(self, now):
        """At least every few days (the pipeline: once a second, sending or not). A bucket
        remembers the tick it was last counted at; unvisited for more than 6.2 days, ticks_diff
        on the board (2**30 period) would wrap and show that tick as lying in the future: no
        refill, and telemetry stalled for up to 6 more days after a week-long outage. Visiting
        keeps every bucket's tick within its window of now."""
        for i in range(_N):
            self.level(i, now)

    def allow(self, points, now):
        """True (and the cost spent) when one message of `points` data points may go now."""
        for i in range(_N):
            if self.level(i, now) < (1 if i < _MESSAGE_BUCKETS else points):
                self.waits += 1
                return False
        tokens = self.tokens
        for i in range(_N):
            tokens[i] -= 1 if i < _MESSAGE_BUCKETS else points
        return True
