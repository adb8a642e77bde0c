"""Figures for a fleet outage run (bench/fleet.py), from what the server recorded.

Pure functions over tbsim events and telemetry series, so they can be tested without meters,
plus a model of the firmware's own backoff (firmware/backoff.py, imported as is) that says
what the reconnect figures should be for given settings: the test bounds come from it.
"""

import math
import random


def per_second(times, t0, t1):
    """How many of `times` fall in each whole second of [t0, t1)."""
    bins = [0] * max(1, int(math.ceil(t1 - t0)))
    for t in times:
        if t0 <= t < t1:
            bins[int(t - t0)] += 1
    return bins


def percentile(values, p):
    """The p-th percentile (nearest rank) of values; None when there are none."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def distribution(bins):
    """Peak and spread of a per-second histogram (seconds with no attempt count too)."""
    return {"peak": max(bins) if bins else 0, "mean": sum(bins) / len(bins) if bins else 0.0,
            "p50": percentile(bins, 50), "p90": percentile(bins, 90),
            "p99": percentile(bins, 99), "seconds": len(bins), "total": sum(bins)}


def first_after(events, t0, match):
    """{device: time of the first event after t0 that match(event) accepts}."""
    out = {}
    for e in events:
        if e["t"] >= t0 and match(e):
            out.setdefault(e.get("device"), e["t"])
    return out


def is_telemetry(e):
    return (e["kind"] == "publish" and e.get("accepted") and e.get("device")
            and e.get("topic") == "v1/devices/me/telemetry")


def is_connect(e):
    return e["kind"] == "connect"


def series_check(points, interval_ms, tolerance_ms=600):
    """Whether every reading a meter took reached the server.

    points: (ts ms, pulse index) as the server stored them, in arrival order. The meter takes
    one reading every interval_ms on its own clock (a little more: its loop runs every 50 ms),
    so a gap longer than interval_ms + tolerance_ms between two stored readings is a reading
    that never arrived; a gap of k intervals is k - 1 of them. The same ts twice is the
    at-least-once redelivery ThingsBoard absorbs (one value per key and ts) unless it carries
    two different indexes; the index must never go backwards.
    """
    by_ts = {}
    conflicts = 0
    for ts, index in points:
        if by_ts.setdefault(ts, index) != index:
            conflicts += 1
    uniq = sorted(by_ts)
    gaps = [b - a for a, b in zip(uniq, uniq[1:])]
    lost = sum(max(1, int(round(g / float(interval_ms))) - 1)
               for g in gaps if g > interval_ms + tolerance_ms)
    ordered = [by_ts[t] for t in uniq]
    backwards = sum(1 for a, b in zip(ordered, ordered[1:]) if b < a)
    return {"readings": len(uniq), "duplicates": len(points) - len(uniq), "conflicts": conflicts,
            "backwards": backwards, "lost": lost, "max_gap_ms": max(gaps) if gaps else None,
            "first_ts": uniq[0] if uniq else None, "last_ts": uniq[-1] if uniq else None,
            "last_index": ordered[-1] if ordered else None}


def model_reconnects(meters, outage_s, retry_min_s, retry_max_s, rng):
    """Seconds after the restart at which each meter first tries again, per the firmware's
    Backoff: every meter loses the server at t=0 and retries after min, 2*min, ... (capped at
    max), each drawn from [d/2, d]; refused until outage_s."""
    from firmware.backoff import Backoff
    out = []
    for _ in range(meters):
        b = Backoff(retry_min_s * 1000, retry_max_s * 1000, rng.random)
        t = 0.0
        while t < outage_s:
            t += b.next_ms() / 1000.0
        out.append(t - outage_s)
    return out


def reconnect_bound_s(outage_s, retry_min_s, retry_max_s):
    """The latest a meter can first try again after the restart, whatever the dice say.

    The k-th delay is drawn from [d_k/2, d_k] (d_k = min * 2^k, capped at max), so the k-th
    wait can only still be running at the restart if the waits before it, at their shortest,
    end before outage_s; it then ends at most d_k after the restart. The bound is the d_k of
    the last stage that can be running."""
    d_of = lambda k: min(retry_min_s * 2 ** k, retry_max_s)  # noqa: E731
    k, earliest = 0, 0.0
    while earliest + d_of(k) / 2.0 < outage_s and d_of(k) < retry_max_s:
        earliest += d_of(k) / 2.0
        k += 1
    return float(d_of(k))


def model(meters, outage_s, retry_min_s, retry_max_s, trials=200, seed=1):
    """What the backoff alone predicts over many trials: the per-second CONNECT peak (median
    and 99th percentile of the trials) and the time until the last meter tries again."""
    rng = random.Random(seed)
    peaks, lasts = [], []
    for _ in range(trials):
        ts = model_reconnects(meters, outage_s, retry_min_s, retry_max_s, rng)
        peaks.append(max(per_second(ts, 0.0, max(ts) + 1)))
        lasts.append(max(ts))
    return {"peak_p50": percentile(peaks, 50), "peak_p99": percentile(peaks, 99),
            "last_p50_s": percentile(lasts, 50), "last_max_s": max(lasts),
            "trials": trials}
