"""power_error_pct and zero_power_delay_s against a known load.

The load is a household moment: a 250 W base load, a 2250 W kettle switched on, then off, then
everything off. Edges are placed where the energy integral crosses each pulse (exact for a
piecewise-constant load). Time runs 30 times faster than at default settings, with the same
pulses per publish interval: pulses_per_kwh 30000 and publish_interval_s 2 stand for 1000 and
60, zero_power_timeout_s 10 for 300, so watts, pulse counts per reading and the
count-per-interval quantisation are the default ones; delays are reported in default-settings
seconds (measured x 30). Every millisecond of timing jitter weighs 30 times more than it would.

steady: readings whose publish interval lies wholly in a constant load and at least 2 pulses
after it began. after_step: the first reading taken at least 2 pulses after each step between
two non-zero loads. Errors are |reported - true| / true in %. power_input_jitter_pct is the
control: how far the played edges themselves are from where they should be.
"""

import time

from bench.rig import Player, fail, together

SPEEDUP = 30
PER_KWH = 30000
INTERVAL_S = 2


def pulse_times(segments, end_s, per_kwh):
    """Edge times for a piecewise-constant load [(start_s, watts), ...] up to end_s."""
    joules = 3.6e6 / per_kwh
    times, acc = [], 0.0
    bounds = [t for t, _ in segments[1:]] + [end_s]
    for (t0, w), t1 in zip(segments, bounds):
        t = t0
        while w > 0:
            dt = (joules - acc) / w
            if t + dt > t1:
                acc += w * (t1 - t)
                break
            t += dt
            times.append(t)
            acc = 0.0
    return times


class Scheduled(Player):
    """Plays precomputed edge times (seconds from start)."""

    def __init__(self, meter, offsets):
        super().__init__(meter, 1, lambda t: 0)
        self.offsets = offsets

    def run(self):
        self.start_time = t0 = time.time()
        for off in self.offsets:
            delay = t0 + off - time.time()
            if delay > 0 and self._halt.wait(delay):
                break
            self.meter.pulse(1)
            self.times.append(time.time())


def _load_at(segments, t):
    w = 0
    for start, watts in segments:
        if t >= start:
            w = watts
    return w


def analyse(segments, edges, readings, t0):
    """Figures from server readings [(t_host_s, power_w)] and edge host times."""
    bounds = [t for t, _ in segments[1:]]
    steady, after = [], []

    def nth_edge_after(t, n):
        later = [e for e in edges if e > t0 + t]
        return later[n - 1] - t0 if len(later) >= n else None

    for i, (start, w) in enumerate(segments):
        if w <= 0:
            continue
        end = bounds[i] if i < len(bounds) else None
        second = nth_edge_after(start, 2)
        if second is None:
            continue
        for t, p in readings:
            r = t - t0
            if r >= max(start + INTERVAL_S, second) and (end is None or r < end):
                steady.append(100.0 * abs(p - w) / w)
        if i > 0 and segments[i - 1][1] > 0:
            first = [(t - t0, p) for t, p in readings if t - t0 >= second]
            if first and (end is None or first[0][0] < end):
                after.append(100.0 * abs(first[0][1] - w) / w)
    off = max(start for start, w in segments if w > 0)
    off = [t for t, _ in segments if t > off][0]
    before_off = [w for t, w in segments if t < off][-1]
    later = [(t - t0, p) for t, p in readings if t - t0 >= off]
    zero = next((r for r, p in later if p == 0), None)
    tenth = next((r for r, p in later if p <= before_off / 10), None)
    out = {}
    if steady:
        out["power_error_pct"] = {"steady": round(max(steady), 2),
                                  "steady_mean": round(sum(steady) / len(steady), 2)}
    if after:
        out.setdefault("power_error_pct", {})["after_step"] = round(max(after), 2)
    if zero is not None:
        out["zero_power_delay_s"] = round((zero - off) * SPEEDUP)
    if tenth is not None:
        out["power_below_10pct_delay_s"] = round((tenth - off) * SPEEDUP)
    return out


def input_jitter(segments, offsets, times):
    """The simulated input's own error: the largest |played gap - intended gap| / intended gap
    (%) between two edges of one constant load. A meter timing edges perfectly could be this
    far off on a single pulse interval."""
    starts = [t for t, _ in segments]

    def segment(t):
        return sum(1 for st in starts if t >= st)

    worst = 0.0
    for i in range(min(len(offsets), len(times)) - 1):
        if segment(offsets[i]) != segment(offsets[i + 1]) or i == 0 or \
                segment(offsets[i - 1]) != segment(offsets[i]):
            continue  # a gap that spans a step is not one load's
        ideal = offsets[i + 1] - offsets[i]
        worst = max(worst, abs((times[i + 1] - times[i]) - ideal) / ideal)
    return round(100 * worst, 2)


def _run(rig, kind, segments, end_s, out):
    cfg = rig.config(publish_interval_s=INTERVAL_S, persist_interval_s=10, health_interval_s=0,
                     pulses_per_kwh=PER_KWH, zero_power_timeout_s=10)
    m = rig.meter(kind, cfg, tag="-power")
    m.power_on()
    try:
        rig.need_readings(m, 1, 40, "power run")
        offsets = pulse_times(segments, end_s, PER_KWH)
        player = Scheduled(m, offsets)
        player.start()
        player.join(end_s + 30)
        time.sleep(max(0.0, player.start_time + end_s - time.time()))
        readings = [(e["ts"] / 1000.0, e["values"]["power_w"]) for e in rig.readings(m)]
        got = analyse(segments, player.times, readings, player.start_time)
        got["power_input_jitter_pct"] = input_jitter(segments, offsets, player.times)
        if "power_error_pct" not in got:
            fail(m, "power run: no reading in a steady phase")
        out.update(got)
    finally:
        m.close()


def power_accuracy(rig, s):
    segments = s.power_segments
    end_s = segments[-1][0] + 10 + 2 * INTERVAL_S + 3  # zero-power timeout, two readings, margin
    out = {"firmware": {}, "baseline": {}}
    together(*[lambda k=k: _run(rig, k, segments, end_s, out[k]) for k in out])
    return out
