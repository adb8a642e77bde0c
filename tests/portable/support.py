# Helpers for tests that run on CPython (pytest) and on the MicroPython Unix port (run.py).
# No pytest features here: plain functions and asserts.

import os


class Clock:
    # ticks_* with the ESP32's 2**30 period, driven by hand. By default both ticks start 30 s
    # before they wrap (ticks_us wraps again every 17.9 min, ticks_ms every 12.4 days), as a
    # board's do 12.4 days after power-up.
    PERIOD = 1 << 30
    START_US = ((1 << 30) - 30000) * 1000

    def __init__(self, start_us=START_US):
        self.us = start_us

    def ticks_us(self):
        return self.us % self.PERIOD

    def ticks_ms(self):
        return (self.us // 1000) % self.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) & (self.PERIOD - 1)
        return d - self.PERIOD if d >= (self.PERIOD >> 1) else d

    def ticks_add(self, a, b):
        return (a + b) % self.PERIOD

    def advance_us(self, us):
        self.us += us

    def advance_ms(self, ms):
        self.us += ms * 1000


class ListLog:
    def __init__(self):
        self.lines = []
        self.last_error = None

    def _add(self, level, tag, msg, args):
        self.lines.append("%s %s: %s" % (level, tag, msg % args if args else msg))

    def info(self, tag, msg, *args):
        self._add("I", tag, msg, args)

    def warn(self, tag, msg, *args):
        self._add("W", tag, msg, args)

    def error(self, tag, msg, *args):
        self._add("E", tag, msg, args)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


_n = [0]


def fresh_dir():
    """A new empty directory, made the working directory (the Store's flash)."""
    base = os.getenv("PORTABLE_TMP") or "/tmp"
    while True:
        _n[0] += 1
        d = "%s/mtest-%d-%d" % (base, os.getpid() if hasattr(os, "getpid") else 0, _n[0])
        try:
            os.mkdir(d)
            break
        except OSError:
            continue
    os.chdir(d)
    return d


def telemetry_bytes(readings, per_kwh):
    """The telemetry payload for a list of readings, as bytes (the meter builds it in its
    preallocated buffer, firmware/telemetry.py Payload)."""
    from firmware.telemetry import Payload
    mv, _ = Payload(64 + 160 * len(readings)).batch(readings, per_kwh)
    return bytes(mv)


class Lcg:
    # A small deterministic generator: the same numbers on CPython and MicroPython.
    def __init__(self, seed):
        self.x = seed & 0x7FFFFFFF

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def bouncing_edges(rate, seconds, bounce=2, seed=1, start_us=1000000, spikes=0):
    """Edge times (µs) of a contact closing `rate` times a second for `seconds`, each closure
    followed by `bounce` extra edges 0.5-5 ms after it, and every `spikes`-th closure (0: none)
    by an isolated spike 6-9 ms after it. Returns (sorted edge times, real pulses)."""
    r = Lcg(seed)
    period = 1000000 // rate
    out = []
    n = rate * seconds
    for i in range(n):
        t = start_us + i * period
        out.append(t)
        for _ in range(bounce):
            out.append(t + 500 + r.below(4501))
        if spikes and i % spikes == spikes - 1:
            out.append(t + 6000 + r.below(3001))
    out.sort()
    return out, n


class Hw:
    # A hardware counter: counts every edge played; take() returns the count since the last.
    def __init__(self):
        self.count = 0

    def take(self):
        n, self.count = self.count, 0
        return n


class MainLoop:
    """The meter's main loop around a PulseCounter, with the pulse hardware of an ESP32:
    each step drains the counter (service), works for step_us, may stall, calls idle() and
    sleeps loop_ms. Every edge reaches the hardware counter (if any); its handler runs at once
    unless the loop is stalled, when it waits in a queue of `queue` (8 on ESP32, 4 on the Unix
    port; the rest are dropped, as micropython.schedule drops them) and runs when the stall
    ends, back to back, with the timestamp of then (the soft-IRQ wart)."""

    def __init__(self, counter, clock, hw=None, queue=8, loop_ms=50, step_us=500, idle=True,
                 seed=1):
        # step_us: how long each step works; (lo, hi) for a length drawn from lo..hi per step,
        # as a loaded host's steps vary.
        self.p, self.clock, self.hw, self.queue = counter, clock, hw, queue
        self.loop_us, self.step_us, self.idle = loop_ms * 1000, step_us, idle
        self.dropped = 0
        self._rand = Lcg(seed)

    def _step(self):
        s = self.step_us
        if isinstance(s, tuple):
            return s[0] + self._rand.below(s[1] - s[0] + 1)
        return s

    def _play(self, edges, i, until, blocked_until=None):
        # Plays edges[i:] that happen before `until`; returns the next index.
        q = []
        while i < len(edges) and edges[i] < until:
            t = edges[i]
            if self.hw is not None:
                self.hw.count += 1
            if blocked_until is not None:
                if len(q) < self.queue:
                    q.append(t)
                else:
                    self.dropped += 1
            else:
                self.clock.us = t
                self.p.edge(None)
            i += 1
        for j in range(len(q)):
            self.clock.us = until + 30 * j  # the queue drains back to back after the stall
            self.p.edge(None)
        self.burst_us = 30 * len(q)
        return i

    def run(self, edges, end_us, stalls=(), busy=()):
        """Run until end_us. stalls: (start_us, length_us) blocked in C, or (start_us,
        length_us, pieces, gap_us): that many blocks of length_us with gap_us of bytecode
        between them, in which the queue drains and handlers run on time (a slow flash's block
        programs, one index write); busy: (start_us, length_us) of steps that run Python that
        long (handlers on time)."""
        stalls = sorted(stalls)
        busy = sorted(busy)
        i = 0
        t = self.clock.us
        while t < end_us:
            i = self._play(edges, i, t)
            self.clock.us = t
            self.p.service(t // 1000)
            t += self._step()
            i = self._play(edges, i, t)
            if busy and busy[0][0] <= t:
                t += busy.pop(0)[1]
                i = self._play(edges, i, t)
            if stalls and stalls[0][0] <= t:
                stall = stalls.pop(0)
                pieces, gap = (stall[2], stall[3]) if len(stall) > 2 else (1, 0)
                for _ in range(pieces):
                    i = self._play(edges, i, t + stall[1], True)
                    t += stall[1] + self.burst_us
                    if gap:
                        i = self._play(edges, i, t + gap)
                        t += gap
            self.clock.us = t
            if self.idle:
                self.p.idle()
            t += self.loop_us
        return i
