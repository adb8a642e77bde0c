"""Time through the whole meter (firmware/wiring.py), on the ESP32's 2**30 ticks (FakeClock starts
30 s before both ticks wrap): NTP re-syncs, a drifting RTC, readings taken before the clock was
known, TLS before the clock, and a week offline."""

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
TELE = "v1/devices/me/telemetry"
DAY = 86_400_000
Y2000 = 946_684_800_000


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def in_run(rig):
    return rig.meter is not None and rig.meter.state == M.RUN


def provisioned(token="tok-AAAA-1111"):
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": token, "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.tokens[token] = NAME
    return b


def skip(rig, ms, step_ms=60_000):
    """Time passes in coarse main-loop steps (a board steps every 50 ms; anything below the
    6.2 days ticks_diff spans keeps the meter's clocks right)."""
    for _ in range(ms // step_ms):
        rig.hal.clock.advance_ms(step_ms)
        rig.meter.step()


def points(rig, key="pulses"):
    out = []
    for m in rig.broker.messages(TELE):
        for p in (m if isinstance(m, list) else [m]):
            vals = p.get("values", p)
            if key in vals:
                out.append((p.get("ts"), vals))
    return out


class _NullLog:
    def warn(self, *a):
        pass


def test_a_week_offline_then_telemetry_health_and_the_index_resume_at_once():
    # On the 2**30 ticks a week is minus 5.4 days to ticks_diff: the pacer's buckets, the
    # health timer and the index's write timer all read "days to go" without the fix.
    rig = Rig(provisioned(), health_interval_s=600)
    assert rig.run(60_000, lambda: in_run(rig))
    rig.run(5_000)
    rig.hal.wifi_up = False
    skip(rig, 7 * DAY)
    before = len(points(rig)), len(points(rig, "uptime_s"))
    rig.hal.wifi_up = True
    assert rig.run(5 * 60_000, lambda: in_run(rig))
    assert rig.run(60_000, lambda: len(points(rig)) > before[0])  # replay starts at once
    assert rig.run(60_000, lambda: len(points(rig, "uptime_s")) > before[1])
    ts, health = points(rig, "uptime_s")[-1]
    assert 7 * 86400 <= health["uptime_s"] <= 7 * 86400 + 600
    rig.pulse(5)
    assert Store(_NullLog()).read("pulses")["index"] >= 1  # written at once: a week since the last
    rig.run(61_000)
    assert Store(_NullLog()).read("pulses")["index"] == 5  # and within persist_interval_s after
    rig.run(5 * 60_000)
    stamps = [t for t, _ in points(rig)]
    assert None not in stamps and stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_the_clock_is_synced_again_every_ntp_interval_with_the_correction_in_ms():
    rig = Rig(provisioned(), ntp_interval_s=600)
    rig.hal.drift_ppm = 10_000  # 1 % fast: 6 s every 10 minutes
    assert rig.run(60_000, lambda: in_run(rig))
    q0 = rig.hal.ntp_queries
    skip(rig, 3_600_000, 1_000)
    assert rig.hal.ntp_queries - q0 == 6
    fixes = [l for l in rig.lines if "re-synced with pool.ntp.org: clock corrected by" in l]
    assert len(fixes) == 6 and all(" by -59" in l or " by -60" in l for l in fixes), fixes
    stamps = [t for t, _ in points(rig)]
    assert None not in stamps and all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(rig.hal.epoch_ms() - rig.hal.true_ms()) < 6_100


def test_a_clock_moved_back_by_a_sync_never_moves_timestamps_back():
    rig = Rig(provisioned(), ntp_interval_s=60, publish_interval_s=2)
    assert rig.run(60_000, lambda: in_run(rig))
    rig.hal.epoch_ms(rig.hal.epoch_ms() + 20_000)  # the RTC jumps 20 s ahead
    rig.run(150_000)
    assert any("clock corrected by -20" in l for l in rig.lines), rig.text()[-2000:]
    stamps = [t for t, _ in points(rig)]
    assert None not in stamps and all(b > a for a, b in zip(stamps, stamps[1:]))


def test_readings_taken_offline_before_ntp_answered_get_the_time_they_were_taken():
    rig = Rig(provisioned(), start=False)
    rig.hal.wifi_up = False
    rig.power_up()
    boot_true = rig.hal.true_ms()
    skip(rig, 10 * 60_000, 1_000)  # 10 minutes: a reading a minute, nothing to sync with
    assert len(rig.backlog) == 10
    rig.hal.wifi_up = True
    assert rig.run(5 * 60_000, lambda: in_run(rig))
    rig.run(10_000)
    got = points(rig)
    stamps = [t for t, _ in got]
    assert None not in stamps and len(set(stamps)) == len(stamps) == len(got) >= 11
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    for i, t in enumerate(stamps[:10]):  # taken at boot, then every 60 s, by the uptime
        assert abs(t - (boot_true + i * 60_000)) <= 1_100, (i, t - boot_true)


def test_with_ntp_blocked_readings_are_still_taken_and_buffered_offline():
    rig = Rig(provisioned(), start=False)
    rig.hal.wifi_up = False
    rig.hal.time_ok = False
    rig.power_up()
    skip(rig, 30 * 60_000, 1_000)
    assert len(rig.backlog) == 30


def test_readings_of_a_boot_that_never_knew_the_time_are_dropped_not_misplaced():
    rig = Rig(provisioned(), start=False)
    rig.hal.wifi_up = False
    rig.hal.time_ok = False
    rig.power_up()
    skip(rig, 2 * 3_600_000)  # two hours offline and unsynced: most of it on flash
    assert rig.backlog.flash_points() >= 100
    rig.cut_power()
    rig.hal.wifi_up = True
    rig.hal.time_ok = True
    rig.power_up()
    assert rig.run(5 * 60_000, lambda: in_run(rig))
    rig.run(60_000)
    assert any("readings from before the clock was set dropped" in l for l in rig.lines)
    got = points(rig)
    assert got and all(t is not None for t, _ in got)  # none placed at replay time
    assert len(rig.backlog) == 0


def test_tls_with_the_rtc_at_2000_and_ntp_blocked_never_connects_and_says_why():
    rig = Rig(provisioned(), start=False, tb_tls=True, tb_plain_ok=False)
    rig.hal.epoch_ms(Y2000)  # an ESP32 after power-up
    rig.hal.time_ok = False
    rig.power_up()
    rig.run(15 * 60_000)
    assert rig.broker.connects == [] and rig.broker.provision_requests == []
    assert "clock not set: TLS cannot check certificates" in rig.text()
    assert rig.hal.ntp_queries >= 8  # kept trying, with backoff
    assert rig.hal.ntp_queries <= 15 * 60 // 30 + 6  # retry_max_s 60: 30 s apart at least
    rig.hal.time_ok = True  # the firewall lets NTP through
    assert rig.run(3 * 60_000, lambda: in_run(rig))
    assert points(rig) and all(t is not None for t, _ in points(rig))


def test_a_certificate_not_yet_valid_by_the_clock_says_clock_not_set_and_syncs_first():
    # A clock with a date, but a wrong one (an RTC left at a date before the certificate):
    # mbedTLS refuses the handshake. The meter says the clock is the reason and syncs first.
    rig = Rig(provisioned(), start=False, tb_tls=True, tb_plain_ok=False)
    Store(_NullLog()).write("creds", {"type": "ACCESS_TOKEN", "token": "tok-AAAA-1111"})
    rig.hal.epoch_ms(1_748_736_000_000)  # 2025-06-01
    rig.hal.time_ok = False
    rig.power_up()
    rig.hal.ssl.contexts[0].valid_from_ms = 1_767_225_600_000  # 2026-01-01
    rig.run(60_000)
    assert "TLS: The certificate validity starts in the future (clock not set" in rig.text()
    assert rig.broker.connects == []
    rig.hal.time_ok = True
    assert rig.run(5 * 60_000, lambda: in_run(rig))
    assert "synced with pool.ntp.org" in rig.text()


def test_uptime_in_health_and_status_never_goes_negative_across_the_wrap():
    rig = Rig(provisioned(), health_interval_s=60)
    assert rig.run(60_000, lambda: in_run(rig))
    skip(rig, 13 * DAY, 30_000)  # beyond the 12.4-day period of ticks_ms
    ups = [v["uptime_s"] for _t, v in points(rig, "uptime_s")]
    assert ups and ups == sorted(ups) and ups[-1] >= 13 * 86400 - 120
