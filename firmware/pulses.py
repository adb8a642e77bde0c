# Meter pulses -> cumulative pulse index (energy) and instantaneous power.
#
# Two sources, one bookkeeping:
# - The edge handler (`edge`) runs as a GPIO interrupt handler. It timestamps the edge with
#   ticks_us, applies the minimum-interval debounce and bumps a counter in a preallocated
#   array. It allocates nothing and does no float math, so it is legal in a hard IRQ and
#   cheap in a soft one (on ESP32, Pin.irq handlers are scheduled: micropython#14330).
# - Where the board has a hardware counter (ESP32 PCNT via machine.Counter), energy comes from
#   its count instead: it keeps counting while Python is blocked in a TLS handshake or a
#   flash write, when scheduled handlers queue up and overflow (queue depth 8, drops silent).
#   Edge timing from the handler still gives power.
#
# Handler -> main loop hand-off is a double buffer (as ESPHome's pulse_meter): the handler
# writes the half selected by _WSEL; the main loop flips _WSEL, then reads and clears the half
# the handler just left. A handler runs to completion before the main loop resumes (hard IRQ
# preempts, soft IRQ runs between bytecodes), so no edge is counted twice or lost, and no
# critical section is needed.
#
# Debounce (edge to edge, in µs, measured from the last *accepted* edge):
#   first edge ever               -> accepted
#   gap <  min_interval           -> rejected (contact bounce, EMI), last edge time unchanged
#   gap >= min_interval           -> accepted
# The default 15 ms keeps S0 (>= 30 ms on + 30 ms off) and a 10000 imp/kWh LED meter at 16 kW
# (22.5 ms) with room for the scheduling latency of soft IRQs; the README has the table.

from array import array

from micropython import const

# Shared slots (written by the handler, except _WSEL which the main loop flips).
_SEEN = const(0)  # 1 once an edge was accepted: the debounce needs a previous edge
_LAST = const(1)  # ticks_us of the last accepted edge
_WSEL = const(2)  # which half the handler writes (0 or 1)
# Per-half slots at _HALF0 + half * _HLEN.
_HALF0 = const(3)
_HLEN = const(4)
_N = const(0)  # accepted edges
_FIRST = const(1)  # ticks_us of the first of them
_LASTH = const(2)  # ticks_us of the last of them
_REJ = const(3)  # edges rejected by the debounce
_SLOTS = const(11)  # _HALF0 + 2 * _HLEN

# On the ESP32 ticks_us wraps every 2**30 µs (17.9 min) and ticks_diff is only valid within half
# of that, 8.9 min; ticks_ms wraps every 12.4 days, valid within 6.2 (docs/esp32.md: Clock and
# ticks). Past _MAX_US_GAP_MS between two drains (measured on the ms clock) the µs stamps of
# their edges are not compared: an edge can wait for its drain as long as the main loop is
# blocked, so the µs gap may exceed the ms one by that much, and 5 min leaves 3.9 min for it
# (more than the default watchdog allows any block to last).
_MAX_US_GAP_MS = const(300000)
# After this long with no accepted edge, the handler's last edge time is forgotten (the next
# edge is a first edge): its µs age would soon wrap and read as "just now", and every edge for
# up to 9 minutes would be rejected as a bounce. Far above the longest debounce (10 s).
_FORGET_US = const(60000000)
# After a day without edges the last drained edge is forgotten too (the next edge starts afresh,
# as after boot): a gap of 6.2 days on the ms clock would otherwise read as short, and the power
# come from wrapped µs stamps. Power is 0 by then (zero_power_timeout_s is at most an hour).
_FORGET_MS = const(86400000)


def energy_parts(index, per_kwh):
    """kWh for a pulse index as (whole, fraction, decimal places): integer math only, no float
    rounding. Exact whenever pulses_per_kwh has no prime factor but 2 and 5 (100, 800, 1000,
    2000, 10000, ...); otherwise rounded to 9 decimals, far below one pulse.

    Every intermediate stays below the fraction's scale (or pulses_per_kwh x 10), so on the
    ESP32 the arithmetic is small-int (below 2**30: no heap allocation) for any index, as long
    as the exact decimal needs at most 9 places (every constant above does; 25600 and beyond
    would need more). index * 10**places, the obvious way, passes 2**30 after 1074 kWh at
    1000 imp/kWh and then allocates big-int temporaries for every reading."""
    c = per_kwh
    places = 0
    while c % 10 == 0:
        c //= 10
        places += 1
    twos = fives = 0
    while c % 2 == 0:
        c //= 2
        twos += 1
    while c % 5 == 0:
        c //= 5
        fives += 1
    whole, rem = divmod(index, per_kwh)
    if c == 1:
        places += twos if twos > fives else fives
        # per_kwh divides 10**places: the fraction is rem scaled, exactly.
        return whole, rem * (10 ** places // per_kwh), places
    # Long division, one digit at a time: rem * 10 < per_kwh * 10 throughout.
    frac = 0
    for _ in range(9):
        d, rem = divmod(rem * 10, per_kwh)
        frac = frac * 10 + d
    if 2 * rem >= per_kwh:  # round half up, as (index * 10**9 + per_kwh // 2) // per_kwh
        frac += 1
        if frac == 1000000000:
            whole, frac = whole + 1, 0
    return whole, frac, 9


def energy_text(index, per_kwh):
    """kWh for a pulse index, as exact decimal text (see energy_parts)."""
    whole, frac, places = energy_parts(index, per_kwh)
    return "%d.%0*d" % (whole, places, frac) if places else "%d" % whole


class PulseCounter:
    def __init__(self, ticks_us, ticks_diff, per_kwh, min_interval_ms, zero_power_timeout_s,
                 hw_counter=None, index=0):
        # ticks_diff serves both clocks (µs edge stamps, ms main-loop times), as in MicroPython.
        self._st = array("l", [0] * _SLOTS)  # the only state the handler touches
        self._ticks_us = ticks_us
        self._ticks_diff = ticks_diff
        self._min_us = min_interval_ms * 1000
        # Bound method cached once: creating it inside Pin.irq would allocate on every edge.
        self.edge = self._edge
        self.hw = hw_counter  # .take(): edges counted in hardware since the last take()
        self.per_kwh = per_kwh
        self._wus_per_pulse = 3.6e12 / per_kwh  # W * µs carried by one pulse
        self._zero_ms = zero_power_timeout_s * 1000
        self.index = index  # cumulative pulses: the meter's energy register
        self.rejected = 0  # debounced edges since boot
        self.missed_edges = 0  # edges the hardware counted but the handler never saw
        self.power_w = 0.0
        self._prev_us = None  # ticks_us of the last edge before this drain
        self._prev_ms = None  # ticks_ms when that edge was drained
        self._interval_us = 0  # last measured pulse interval

    def _edge(self, _pin):
        # Interrupt handler: no allocation, no float, preallocated state only.
        now = self._ticks_us()
        st = self._st
        o = _HALF0 + st[_WSEL] * _HLEN
        if st[_SEEN] and self._ticks_diff(now, st[_LAST]) < self._min_us:
            st[o + _REJ] += 1
            return
        st[_SEEN] = 1
        st[_LAST] = now
        if st[o + _N] == 0:
            st[o + _FIRST] = now
        st[o + _LASTH] = now
        st[o + _N] += 1

    def service(self, now_ms):
        """Drain the handler's counts into the index and update power. Main loop only."""
        st = self._st
        w = st[_WSEL]
        st[_WSEL] = 1 - w  # from here on the handler writes the other half
        o = _HALF0 + w * _HLEN
        n = st[o + _N]
        first = st[o + _FIRST]
        last = st[o + _LASTH]
        self.rejected += st[o + _REJ]
        st[o + _N] = 0
        st[o + _REJ] = 0
        if self.hw is not None:
            counted = self.hw.take()
            if counted > n:
                self.missed_edges += counted - n
        else:
            counted = n
        self.index += counted
        if n:
            self._on_edges(n, first, last, counted, now_ms)
        else:
            self._decay(now_ms)
        return counted

    def _on_edges(self, n, first, last, counted, now_ms):
        diff = self._ticks_diff
        if self._prev_us is not None and diff(now_ms, self._prev_ms) < _MAX_US_GAP_MS:
            intervals = n
            dt = diff(last, self._prev_us)
        else:
            # First edges after boot or a long idle: only this batch's own spacing is usable.
            intervals = n - 1
            dt = diff(last, first)
            if intervals == 0 and self._prev_ms is not None:
                # One edge after a long gap: the load was at most one pulse over that gap.
                gap_ms = diff(now_ms, self._prev_ms)
                self.power_w = self._wus_per_pulse / (gap_ms * 1000)
        if intervals > 0 and dt > 0 and counted == n:
            # When the hardware saw more edges than the handler, the handler's spacing does not
            # describe them: keep the previous power rather than report a wrong one.
            self.power_w = intervals * self._wus_per_pulse / dt
            self._interval_us = dt // intervals
        self._prev_us = last
        self._prev_ms = now_ms

    def _decay(self, now_ms):
        # No edge since the last drain. Once the gap exceeds the last interval the load must
        # have dropped: it is at most one pulse over the time since the last edge. After the
        # zero-power timeout, report 0 (a meter with no load gives no pulses at all).
        st = self._st
        if st[_SEEN] and self._ticks_diff(self._ticks_us(), st[_LAST]) >= _FORGET_US:
            # Checked every step, long before the age can wrap. An edge the handler takes
            # between the test and the store loses its debounce reference: at most one bounce
            # after it counts, once per minute-long silence at the very µs it ends.
            st[_SEEN] = 0
        if self._prev_ms is None:
            return
        idle_ms = self._ticks_diff(now_ms, self._prev_ms)
        if idle_ms >= _FORGET_MS:
            self._prev_ms = self._prev_us = None
            self.power_w = 0.0
            return
        if idle_ms >= self._zero_ms:
            self.power_w = 0.0
            return
        if idle_ms < _MAX_US_GAP_MS:
            idle_us = self._ticks_diff(self._ticks_us(), self._prev_us)
        else:
            idle_us = idle_ms * 1000
        if idle_us > self._interval_us and idle_us > 0:
            bound = self._wus_per_pulse / idle_us
            if bound < self.power_w:
                self.power_w = bound

    def energy_text(self):
        return energy_text(self.index, self.per_kwh)
