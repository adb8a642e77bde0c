"""A fleet rides out a server outage (issue 6, "Never lose a reading"): bench/fleet.py with 50
meters against tbsim, which is stopped (connections refused) for 30 s and restarted on the
same port with the same devices. `make fleet` runs the same scenario with 200 meters and the
firmware's default backoff (docs/fleet.md has the figures).

The bounds come from the backoff settings, not from a stopwatch: every meter's pending retry
ends at most reconnect_bound_s() after the restart (firmware/backoff.py draws each delay from
[d/2, d]), plus fleet.SLACK_S for the connect, the subscriptions and the first publish on two
busy cores. The reconnect peak must stay well below the fleet size per second (a quarter of
it: the backoff model puts its 99th percentile at 10 to 11/s for these settings)."""

import pytest

from bench import fleet, fleetstats

METERS = 50
OUTAGE_S = 30
INTERVAL_S = 5
RETRY_MIN_S, RETRY_MAX_S = 1, 20


@pytest.mark.timeout(420)
def test_fleet_outage_loses_no_reading_and_reconnects_spread_out(tmp_path, device_dir):
    r = fleet.run(METERS, OUTAGE_S, INTERVAL_S, RETRY_MIN_S, RETRY_MAX_S, boot_rate=10.0,
                  warmup_s=INTERVAL_S, workdir=str(tmp_path))
    report = fleet.summary(r)
    print(report)
    assert r["outage_refused"], "tbsim's MQTT listener was still accepting during the outage"
    assert r["crashed"] == [], report
    # Every reading taken, before, during and after the outage, is on the server.
    assert r["readings_lost"] == 0, [(m["meter"], m["max_gap_ms"]) for m in r["per_meter"]
                                     if m["lost"]]
    assert r["conflicts"] == 0 and r["backwards"] == 0, report
    assert r["energy_agrees"] == METERS, report
    assert r["readings"] >= METERS * (OUTAGE_S // INTERVAL_S + 4), report  # the outage is in it
    assert r["all_caught_up_after_s"] is not None, report  # every backlog replayed
    # Back within the backoff's bound.
    bound = fleetstats.reconnect_bound_s(r["outage_s"], RETRY_MIN_S, RETRY_MAX_S)
    assert bound == RETRY_MAX_S
    assert r["not_back"] == [] and r["all_publishing_after_s"] <= bound + fleet.SLACK_S, report
    # Spread out, and no meter had to try twice once the server was back.
    c = r["reconnect"]
    assert c["peak"] <= METERS // 4, report
    assert c["total"] >= METERS and c["refused_connacks"] == 0, report
    assert sum(1 for n in c["per_second"] if n) >= 8, report  # over many seconds, not one burst
    # make fleet's chart of this very report: one bar per second, every CONNECT in it, and
    # every meter on the "back" curve.
    from lab.charts import fleet_chart
    fig = fleet_chart(str(tmp_path / "fleet.png"), r)
    top, bottom = fig.axes
    assert sum(p.get_height() for p in top.patches) == c["total"]
    assert len(bottom.get_lines()[0].get_xdata()) == METERS
    assert (tmp_path / "fleet.png").read_bytes()[:4] == b"\x89PNG"
