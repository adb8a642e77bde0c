# Meter pulses -> cumulative pulse index (energy) and instantaneous power.
#
# Two sources of edges:
# - The edge handler (`edge`) runs as a GPIO interrupt handler. It timestamps the edge with
#   ticks_us, applies the minimum-interval debounce and bumps counters in a preallocated
#   array. It allocates nothing and does no float math, so it is legal in a hard IRQ and
#   cheap in a soft one. On ESP32, Pin.irq handlers are scheduled (soft) and the timestamp is
#   taken when the handler *runs*, not when the edge happened (docs/esp32.md).
# - Where the board has a hardware counter (ESP32 PCNT via machine.Counter), it counts every
#   edge whatever Python is doing: through a TLS handshake or a flash write, when scheduled
#   handlers queue up (queue depth 8 on ESP32, 4 on the Unix port) and the rest are dropped
#   without a trace. But it counts contact bounce and EMI spikes too: its only filter is a
#   ~12.8 µs glitch filter, and bounce lasts milliseconds.
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
# An accepted edge starts a "train": the real edge and the bounce rejected after it. The
# handler keeps the train's length so far (_TAIL) and, per half, the rejected edges that came
# before the half's first accepted one (_PRE: the end of a train that began earlier).
# The default 15 ms keeps S0 (>= 30 ms on + 30 ms off) and a 10000 imp/kWh LED meter at 16 kW
# (22.5 ms) with room for the scheduling latency of soft IRQs; the README has the table. A
# spike more than min_interval away from any real edge looks like a pulse to any edge filter
# and is counted on both paths; only a longer pulse_min_interval_ms (or a cleaner wire) helps.
#
# Energy with the hardware counter: whose count goes into the index
# ------------------------------------------------------------------
# Neither source is right on its own. The counter includes bounce. The handler misses what it
# never saw, and a handler that ran late (after a stall) judges with a wrong timestamp: the
# queue drains back to back, so real edges look like bounce, and the first bounce after a real
# edge looks like a new pulse ("long" after the last accepted edge). What makes a verdict wrong
# is handler latency, and latency below a third of min_interval cannot flip one for the signals
# the debounce is sized for (bounce and spikes within 2/3 of min_interval after their edge,
# real pulses at least 4/3 of it apart): the measured gap moves by less than the margin.
# Handlers run on time while the main loop sleeps (both ports run them in sleep_ms) and while
# it runs bytecode; late only while it is inside a C call that holds them (TLS, flash, DNS, gc),
# always inside a step. So the main loop says when it goes to sleep (`idle()`), and the time
# from a drain to the next idle() bounds the latency of every handler in between.
#
# The bookkeeping works on chunks: the edges between two drains at which counter and handler
# can be compared exactly ("settled drains", below). Per chunk: H edges counted in hardware, A
# accepted and R rejected by the handler, W its longest step, k the wire's edges per pulse:
#
#   A + R vs H   W vs min/3   k known   -> index +=   why
#   >= H         <=           any          A          every edge judged, on time: exact
#   >= H         >            yes          trains(H)  judged, maybe late: the count decides
#   <  H         any          yes          trains(H)  edges dropped: Python was blocked
#   any          >, or < H    no           held       decided once k is known (below)
#   (A + R > H: a glitch shorter than PCNT's filter reached the GPIO interrupt; taken as >=.)
#   (min_interval 0: no debounce, no verdict to get wrong; W is not looked at.)
#
# trains(H) counts H as pulse trains of the wire's own bounce. k is learnt from the trusted
# chunks (first row) as edges per complete train: trains that began and ended in the chunk,
# plus the one the previous trusted chunk left in progress, once it has ended. It is exact when
# every closure bounces alike and the mean otherwise; it is used once _K_MIN trains are in, or
# from the first if all so far had one length (with min_interval 0 there is nothing to learn:
# k is 1).
# From H come off the head (edges still expected, at the chunk's start, from the train then in
# progress: round(k) minus the edges it had) and the tail (the train in progress at this
# drain: 1 + its rejected edges so far, judged while the loop slept, so on time); the rest is
# divided by k and rounded, plus 1 for the tail's train. Never more than H, never more than
# the rate bound (pulses at least min_interval apart: 1 + chunk length / min_interval):
#   10 pulses, 2 bounces each, no stall:     H 30, A + R 30          -> A = 10
#   the same in a 2 s stall at 50 pulses/s:  H 300, A + R = the 4 or 8 queued, k 3 -> 100
#   no bounce (k 1), 40 edges missed:        H 40                    -> 40
# With irregular bounce or spikes, trains(H) is off by about the spread of the edges per train
# in the chunk over k (the sqrt of the spikes in a long stall, say). Until k is known (a TLS
# handshake right after boot, or a loaded host's long steps) an untrusted chunk is held, its
# tail and rate bound kept, and counted with k as soon as it is known; if that takes _HOLD_MS,
# with its own verdicts' ratio, H * A / (A + R), late as they are. The head a held chunk began
# with is unknown too (round(k) minus the edges of the tail before it): held chunks keep those
# tails' edges and owe round(k) minus each at the release.
# The handler's reference after a stall: the queued handlers run back to back when the block
# ends, and the one that accepts an edge sets the last-edge time to then. The edges after it
# are judged on time but against that late reference: a closure a few ms later looks like
# bounce and its own bounce like the pulse, and the tail then lacks the edges before it. So
# idle(), after a step long enough for late handlers (over min_interval / 3), forgets an edge
# accepted in that step: the next edge starts afresh, as after a silence (hardware path only;
# the interrupt-only path counts its verdicts as they are and its README bound allows for it).
# missed_edges: real pulses the handler did not judge on time (counted - A, where positive);
# bounced_edges: input edges that were not pulses (H - counted; interrupt only: R).
#
# Comparing exactly (settled drains): a counted edge's handler may still be queued when the
# main loop flips the halves; it would land in the next half and look dropped now and
# surplus later. A drain therefore takes the count (n), waits _SETTLE_US running bytecode so
# that queued handlers run (the GPIO interrupt schedules within microseconds of the edge; the
# VM runs scheduled callbacks at branches: docs/esp32.md), flips, notes the train in progress
# (no branch since the flip, so no handler in between), and takes the count again (m). Every
# edge counted before the first take has then been judged in this half or dropped; an edge
# counted between the takes may have been judged in either half:
#   m == 0 -> the chunk ends here: A + R and H describe the same edges
#   m  > 0 -> the chunk goes on to the next drain (at most _DEFER_MS; then it ends, taking
#             the m edges as judged, which can only undercount missed edges)
# The wait is skipped when nothing was counted since the last drain (nothing can be queued).

from array import array

from micropython import const

# Shared slots (written by the handler, except _WSEL which the main loop flips).
_SEEN = const(0)  # 1 once an edge was accepted: the debounce needs a previous edge
_LAST = const(1)  # ticks_us of the last accepted edge
_WSEL = const(2)  # which half the handler writes (0 or 1)
_TAIL = const(3)  # edges rejected since the last accepted one (its train, minus its first edge)
# Per-half slots at _HALF0 + half * _HLEN.
_HALF0 = const(4)
_HLEN = const(5)
_N = const(0)  # accepted edges
_FIRST = const(1)  # ticks_us of the first of them
_LASTH = const(2)  # ticks_us of the last of them
_REJ = const(3)  # edges rejected by the debounce
_PRE = const(4)  # of those, the ones before the half's first accepted edge
_SLOTS = const(44)  # _HALF0 + 2 * _HLEN = 14 for the handler, then the main loop's

# Main-loop slots, after the handler's in the same array (the hardware-counter bookkeeping: no
# interned names, no objects). The handler never touches them.
_CH = const(14)  # chunk: edges counted in hardware
_CA = const(15)  # chunk: edges accepted by the handler
_CS = const(16)  # chunk: edges the handler saw (accepted + rejected)
_CPRE = const(17)  # chunk: rejected before its first accepted edge
_CFIRST = const(18)  # chunk: ticks_us of its first accepted edge
_CLAST = const(19)  # chunk: ticks_us of its last accepted edge
_CMS = const(20)  # chunk: ticks_ms at its start (-1: unknown)
_CUS = const(21)  # chunk: ticks_us at its start
_CW = const(22)  # chunk: longest step, µs
_T1 = const(23)  # ticks_us of the last drain
_IDLE = const(24)  # ticks_us of the last idle()
_IDLED = const(25)  # 1 when idle() was called since the last drain
_HEAD = const(26)  # bounce edges still to come, at the chunk's start, of the train in progress
_KE = const(27)  # edges of complete trains in trusted chunks (halved as it grows)
_KP = const(28)  # those trains
_LATE = const(29)  # edges counted between the two takes of the last drain
_PTAIL = const(30)  # the tail of the last chunk if it was trusted: a train to finish learning
# Untrusted chunks from before the wire is known (k), held until it is.
_HH = const(31)  # their hardware edges
_HX = const(32)  # the same without heads and tails
_HT = const(33)  # their tails (trains in progress at their ends)
_HA = const(34)  # their accepted edges
_HS = const(35)  # their seen edges
_HB = const(36)  # their rate bounds, summed
_HMS = const(37)  # ticks_ms when the first was held (-1: none)
_STAIL = const(38)  # _TAIL and _LAST as the halves flipped (later handlers are the next chunk's)
_SLAST = const(39)
_KODD = const(40)  # 1 once the trains learnt were not all of one length
_PTL = const(41)  # the last chunk's tail when the wire was unknown (its head then is too)
_HPT = const(42)  # of the held chunks that began with such a head: those tails, summed
_HPN = const(43)  # and their number

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

_SETTLE_US = const(100)  # >> the ESP32's GPIO interrupt latency (a few µs)
_SPIN_MAX = const(2000)  # iterations: bounds the wait if the clock does not move (tests)
_DEFER_MS = const(2000)
_K_HALVE = const(4096)  # trains learnt before the history is halved (a wire changes slowly)
_K_MIN = const(8)  # trains learnt before k is used, unless all had one length so far
_HOLD_MS = const(60000)  # the longest an unlearnt chunk waits for the wire to show its trains


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
    # // and - rather than divmod(), whose result tuple would be garbage at every reading.
    whole = index // per_kwh
    rem = index - whole * per_kwh
    if c == 1:
        places += twos if twos > fives else fives
        # per_kwh divides 10**places: the fraction is rem scaled, exactly.
        return whole, rem * (10 ** places // per_kwh), places
    # Long division, one digit at a time: rem * 10 < per_kwh * 10 throughout.
    frac = 0
    for _ in range(9):
        rem *= 10
        d = rem // per_kwh
        rem -= d * per_kwh
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
        self._st = array("l", [0] * _SLOTS)  # all the state the handler touches, and more
        self._st[_CMS] = self._st[_HMS] = -1
        self._st[_T1] = self._st[_CUS] = ticks_us()
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
        self.rejected = 0  # edges the handler debounced, since boot
        self.missed_edges = 0  # real pulses the handler never judged on time (hardware path)
        self.bounced_edges = 0  # input edges that were not pulses (bounce, spikes), since boot
        self.power_w = 0.0
        self._prev_us = None  # ticks_us of the last pulse, when usable to time the next one
        self._prev_ms = None  # ticks_ms when that pulse (or a chunk counted in trains) was drained
        self._interval_us = 0  # last measured pulse interval

    def _edge(self, _pin):
        # Interrupt handler: no allocation, no float, preallocated state only.
        now = self._ticks_us()
        st = self._st
        o = _HALF0 + st[_WSEL] * _HLEN
        if st[_SEEN] and self._ticks_diff(now, st[_LAST]) < self._min_us:
            st[o + _REJ] += 1
            st[_TAIL] += 1
            if st[o + _N] == 0:
                st[o + _PRE] += 1
            return
        st[_SEEN] = 1
        st[_LAST] = now
        st[_TAIL] = 0
        if st[o + _N] == 0:
            st[o + _FIRST] = now
        st[o + _LASTH] = now
        st[o + _N] += 1

    def idle(self):
        """The main loop is about to sleep: handlers run on time until the next service().
        Called right before the loop's sleep (Supervisor.run_forever); without it every step counts
        as short and only dropped edges make a chunk untrusted."""
        m = self._st
        now = self._ticks_us()
        m[_IDLE] = now
        m[_IDLED] = 1
        # Hardware path: after a step long enough for its handlers to have run late (a stall,
        # then the queue drained back to back), an edge they accepted is no reference for the
        # edges to come, which the handler judges on time: a closure just after it would be
        # taken for bounce and its own bounce for the pulse, and the train in progress at the
        # next drain (its tail) would be short of the edges before it. The next edge starts
        # afresh, as after a silence. (The interrupt-only path counts its verdicts as they
        # are: its README bound allows one late bounce per stall, and a forgotten reference
        # would add one more.) A handler that accepts an edge between the test and the store
        # loses its reference: at most one bounce after it counts in this untrusted chunk,
        # which is counted in trains anyway.
        if self.hw is not None and m[_SEEN] and self._min_us \
                and self._ticks_diff(now, m[_T1]) * 3 > self._min_us \
                and self._ticks_diff(m[_LAST], m[_T1]) > 0:
            m[_SEEN] = 0

    def service(self, now_ms):
        """Drain the handler's counts into the index and update power. Main loop only.
        Returns the pulses added to the index."""
        st = self._st
        hw = self.hw
        if hw is None:
            # Interrupt only: the handler's verdicts are all there is.
            w = st[_WSEL]
            st[_WSEL] = 1 - w  # from here on the handler writes the other half
            o = _HALF0 + w * _HLEN
            n = st[o + _N]
            rej = st[o + _REJ]
            st[o + _N] = 0
            st[o + _REJ] = 0
            st[o + _PRE] = 0
            self.rejected += rej
            self.bounced_edges += rej
            self.index += n
            if n:
                self._on_edges(n, st[o + _FIRST], st[o + _LASTH], now_ms)
            else:
                self._decay(now_ms)
            return n
        m = self._st
        us = self._ticks_us
        diff = self._ticks_diff
        n = hw.take()
        if n:
            # Let the handlers of the edges just counted run (branches run scheduled callbacks).
            t = us()
            i = 0
            while i < _SPIN_MAX and diff(us(), t) < _SETTLE_US:
                i += 1
        w = st[_WSEL]
        st[_WSEL] = 1 - w  # from here on the handler writes the other half
        m[_STAIL] = st[_TAIL]  # no branch since the flip: no handler has run in between
        m[_SLAST] = st[_LAST]
        late = hw.take()
        t1 = us()
        o = _HALF0 + w * _HLEN
        a = st[o + _N]
        rej = st[o + _REJ]
        if not m[_CA]:
            m[_CPRE] += st[o + _PRE] if a else rej
            if a:
                m[_CFIRST] = st[o + _FIRST]
        if a:
            m[_CLAST] = st[o + _LASTH]
        st[o + _N] = 0
        st[o + _REJ] = 0
        st[o + _PRE] = 0
        self.rejected += rej
        m[_CH] += n + late
        m[_CA] += a
        m[_CS] += a + rej
        m[_LATE] = late
        if m[_IDLED]:
            step = diff(m[_IDLE], m[_T1])
            if step > m[_CW]:
                m[_CW] = step
        m[_T1] = t1
        if m[_CMS] < 0:
            m[_CMS] = now_ms
        if late and diff(now_ms, m[_CMS]) < _DEFER_MS:
            m[_IDLED] = 0
            return 0
        # End of a chunk: decide whose count goes into the index (the table at the top). Inline,
        # not a method of its own: a method's name is one more interned name (tests/unix).
        h = m[_CH]
        a = m[_CA]
        min_us = self._min_us
        # The train in progress at this drain, if it began in this chunk: judged while the loop
        # slept (it is younger than min_interval), so its length so far is on time.
        last = m[_SLAST]
        tail = 0
        if a and diff(t1, last) < min_us and diff(last, m[_CUS]) > 0:
            tail = 1 + m[_STAIL]
        # Edges per train, x256; with no debounce every edge is a pulse, and k is 1 from the start.
        known = m[_KP] >= _K_MIN or (m[_KP] and not m[_KODD]) or not min_us
        k = (m[_KE] << 8) // m[_KP] if m[_KP] and min_us else 256
        if k < 256:
            k = 256
        # Trusted: the handler saw every edge, on time (a step of at most min/3; with no
        # debounce there is no verdict to get wrong). At a forced end, m edges may be in flight.
        if h - m[_LATE] <= m[_CS] and (m[_CW] * 3 <= min_us or not min_us):
            p = a
            # Learn k from complete trains: the one the last trusted chunk left in progress,
            # if it has ended (a new one began, or min_interval passed), and those that began
            # and ended here.
            e = 0
            done = a - 1 if tail else a
            if done > 0:
                e = h - m[_CPRE] - tail
            if m[_PTAIL] and (a or diff(t1, last) >= min_us):
                e += m[_PTAIL] + m[_CPRE]
                done += 1
            if done > 0 and e >= done:
                m[_KE] += e
                m[_KP] += done
                if m[_KE] % m[_KP] or e != done * (m[_KE] // m[_KP]):
                    m[_KODD] = 1
                if m[_KP] >= _K_HALVE:
                    m[_KE] >>= 1
                    m[_KP] >>= 1
            m[_PTAIL] = tail
            if a:
                self._on_edges(a, m[_CFIRST], m[_CLAST], now_ms)
            else:
                self._decay(now_ms)
        else:
            m[_PTAIL] = 0
            x = h - m[_HEAD] - tail
            if x < 0:
                x = 0
            bound = h
            if min_us and m[_CMS] >= 0:
                bound = 1 + (diff(now_ms, m[_CMS]) + 1) // (min_us // 1000)
            if known:
                p = (x * 512 + k) // (2 * k) + (1 if tail else 0)  # trains(H), rounded
                if p > bound:
                    p = bound
                if p > h:
                    p = h
                if p > a:
                    self.missed_edges += p - a
            else:
                # Too little learnt about the wire yet (a long step right after boot): held
                # until trusted chunks have shown _K_MIN trains (at most _HOLD_MS).
                p = 0
                m[_HH] += h
                m[_HX] += x
                m[_HT] += 1 if tail else 0
                if m[_PTL]:
                    # The train in progress at the last chunk's end went on into this one, by
                    # round(k) minus its edges then: not known yet, owed at the release.
                    m[_HPT] += m[_PTL]
                    m[_HPN] += 1
                m[_HA] += a
                m[_HS] += m[_CS]
                m[_HB] += bound if bound < h else h
                if m[_HMS] < 0:
                    m[_HMS] = now_ms
                h = 0  # accounted for when released
            if p:
                # Power stays as it was: late timestamps do not describe the load. The next
                # pulse is timed from the last accepted edge only if it was judged while the
                # loop slept (on time); idle time counts from this drain at the latest.
                self._prev_ms = now_ms
                if a and m[_IDLED] and diff(last, m[_IDLE]) >= 0 and diff(last, m[_CUS]) > 0:
                    self._prev_us = last
                else:
                    self._prev_us = None
            else:
                self._decay(now_ms)
        if m[_KP] and min_us:
            k = (m[_KE] << 8) // m[_KP]  # with what this chunk taught
            if k < 256:
                k = 256
        known = m[_KP] >= _K_MIN or (m[_KP] and not m[_KODD]) or not min_us
        if m[_HMS] >= 0 and (known or diff(now_ms, m[_HMS]) >= _HOLD_MS):
            hh = m[_HH]
            if known:
                x = (m[_HX] << 8) - m[_HPN] * k + (m[_HPT] << 8)  # x256, the heads owed off
                if x < 0:
                    x = 0
                ph = (x * 2 + k) // (2 * k) + m[_HT]
            else:
                # Still too little learnt: those chunks' own verdicts give their edges per pulse.
                ph = (hh * m[_HA] * 2 + m[_HS]) // (2 * m[_HS]) if m[_HS] else hh
            if ph > m[_HB]:  # the rate bounds, each at most its chunk's edges
                ph = m[_HB]
            if ph > m[_HA]:
                self.missed_edges += ph - m[_HA]
            p += ph
            h += hh
            m[_HH] = m[_HX] = m[_HT] = m[_HA] = m[_HS] = m[_HB] = m[_HPT] = m[_HPN] = 0
            m[_HMS] = -1
        self.index += p
        if h > p:
            self.bounced_edges += h - p
        kk = (k + 128) >> 8
        m[_HEAD] = kk - tail if tail and kk > tail else 0
        m[_PTL] = tail if not known else 0
        m[_CH] = m[_CA] = m[_CS] = m[_CPRE] = m[_CW] = 0
        m[_CMS] = now_ms
        m[_CUS] = t1
        m[_IDLED] = 0
        return p

    def _on_edges(self, n, first, last, now_ms):
        diff = self._ticks_diff
        gap_ms = diff(now_ms, self._prev_ms) if self._prev_ms is not None else -1
        if self._prev_us is not None and gap_ms < _MAX_US_GAP_MS:
            intervals = n
            dt = diff(last, self._prev_us)
        else:
            # First edges after boot, a long idle or an untrusted chunk: only this batch's own
            # spacing is usable.
            intervals = n - 1
            dt = diff(last, first)
            if intervals == 0 and gap_ms >= _MAX_US_GAP_MS:
                # One edge after a long gap: the load was at most one pulse over that gap.
                self.power_w = self._wus_per_pulse / (gap_ms * 1000)
        if intervals > 0 and dt > 0:
            # A float is a heap object: one interval (the usual case below a pulse per step)
            # divides once, one float per pulse; int * float, then / dt, would make two.
            w = self._wus_per_pulse
            self.power_w = (w if intervals == 1 else intervals * w) / dt
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
        if idle_ms < _MAX_US_GAP_MS and self._prev_us is not None:
            idle_us = self._ticks_diff(self._ticks_us(), self._prev_us)
        else:
            idle_us = idle_ms * 1000
        if idle_us > self._interval_us and idle_us > 0:
            bound = self._wus_per_pulse / idle_us
            if bound < self.power_w:
                self.power_w = bound

    def energy_text(self):
        return energy_text(self.index, self.per_kwh)
