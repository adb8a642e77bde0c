"""bench/fleetstats.py: what the fleet run reports is computed right."""

import random

from bench import fleetstats as fs

INTERVAL = 5000


def series(n, start=1_000_000, interval=INTERVAL, jitter=60):
    rng = random.Random(n)
    t, out = start, []
    for i in range(n):
        out.append((t, i * 3))
        t += interval + rng.randint(0, jitter)  # the meter's 50 ms loop stretches intervals
    return out


def test_a_complete_series_loses_nothing():
    r = fs.series_check(series(40), INTERVAL)
    assert r["lost"] == 0 and r["readings"] == 40 and r["duplicates"] == 0
    assert r["backwards"] == 0 and r["conflicts"] == 0 and r["last_index"] == 39 * 3


def test_missing_readings_are_counted_one_by_one():
    pts = series(40)
    del pts[10]  # one gone
    del pts[20:23]  # three more in a row
    r = fs.series_check(pts, INTERVAL)
    assert r["lost"] == 4 and r["max_gap_ms"] >= 4 * INTERVAL


def test_redelivery_is_a_duplicate_not_a_loss_but_two_indexes_for_one_ts_is_a_conflict():
    pts = series(20)
    r = fs.series_check(pts + pts[5:9], INTERVAL)  # a batch sent again after a lost PUBACK
    assert r["duplicates"] == 4 and r["lost"] == 0 and r["conflicts"] == 0
    r = fs.series_check(pts + [(pts[3][0], 999)], INTERVAL)
    assert r["conflicts"] == 1


def test_arrival_order_does_not_matter_but_an_index_going_back_does():
    pts = series(20)
    assert fs.series_check(list(reversed(pts)), INTERVAL)["lost"] == 0
    bad = [(t, i) for t, i in pts]
    bad[7] = (bad[7][0], 0)
    assert fs.series_check(bad, INTERVAL)["backwards"] == 1


def test_per_second_and_distribution():
    bins = fs.per_second([10.0, 10.2, 10.9, 11.5, 13.0, 9.9, 14.0], 10.0, 14.0)
    assert bins == [3, 1, 0, 1]
    d = fs.distribution(bins)
    assert d["peak"] == 3 and d["total"] == 5 and d["seconds"] == 4 and d["p50"] == 1


def test_first_after_keeps_each_devices_first_matching_event():
    ev = [{"t": 1, "kind": "publish", "device": "a", "accepted": True,
           "topic": "v1/devices/me/telemetry"},
          {"t": 5, "kind": "publish", "device": "a", "accepted": False,
           "topic": "v1/devices/me/telemetry"},
          {"t": 6, "kind": "publish", "device": "a", "accepted": True,
           "topic": "v1/devices/me/attributes/request/1"},
          {"t": 7, "kind": "publish", "device": "a", "accepted": True,
           "topic": "v1/devices/me/telemetry"},
          {"t": 8, "kind": "publish", "device": "b", "accepted": True,
           "topic": "v1/devices/me/telemetry"},
          {"t": 9, "kind": "publish", "device": "a", "accepted": True,
           "topic": "v1/devices/me/telemetry"}]
    assert fs.first_after(ev, 2, fs.is_telemetry) == {"a": 7, "b": 8}


def test_reconnect_bound_follows_the_backoff_stages():
    # retry 1..20 s: the waits are [0.5,1], [1,2], [2,4], [4,8], [8,16], then [10,20] forever
    assert fs.reconnect_bound_s(30, 1, 20) == 20
    assert fs.reconnect_bound_s(5, 1, 20) == 8  # the [4,8] wait may start at 3.5 s
    # the firmware defaults, 2..300 s, after a minute: the [32,64] wait may be running
    assert fs.reconnect_bound_s(60, 2, 300) == 64
    assert fs.reconnect_bound_s(0.1, 2, 300) == 2


def test_the_model_uses_the_firmwares_backoff_and_stays_within_the_bound():
    rng = random.Random(3)
    for outage, lo, hi in ((30, 1, 20), (60, 2, 300), (7, 2, 10)):
        ts = fs.model_reconnects(300, outage, lo, hi, rng)
        assert len(ts) == 300
        assert 0 <= min(ts) and max(ts) <= fs.reconnect_bound_s(outage, lo, hi)
    m = fs.model(200, 60, 2, 300, trials=50)
    assert 200 / 40 < m["peak_p50"] <= m["peak_p99"] < 200 / 8  # jitter spreads the fleet
