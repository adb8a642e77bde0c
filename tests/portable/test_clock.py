# The clock (firmware/clock.py, firmware/sync.py) on the ESP32's 2**30 ticks: an uptime that
# never wraps, NTP answers checked before they move the clock, timestamps that never go back,
# and readings taken before the first sync placed in time (or dropped) afterwards.

from firmware.clock import Clock
from firmware.log import Log
from firmware.readings import ReadingQueue
from firmware.sync import parse, request
from support import Clock as Ticks

TRUE0 = 1795000000000  # the true Unix ms when the ticks start
Y2000 = 946684800000
DAY_MS = 86400000


class TimeHal:
    # ticks, an RTC that may start at 2000 and drift, and an NTP server with the true time.
    def __init__(self, rtc=None, drift_ppm=0):
        self.t = Ticks()
        self.ticks_ms = self.t.ticks_ms
        self.ticks_diff = self.t.ticks_diff
        self.ticks_add = self.t.ticks_add
        self.us0 = self.t.us
        self.drift_ppm = drift_ppm
        self.answers = []  # the next NTP answers (None: no answer); then the true time
        self.rtc = (TRUE0 if rtc is None else rtc, self.t.us)

    def true_ms(self):
        return TRUE0 + (self.t.us - self.us0) // 1000

    def epoch_ms(self, ms=None):
        if ms is not None:
            self.rtc = (ms, self.t.us)
            return None
        base, us = self.rtc
        elapsed = (self.t.us - us) // 1000
        return base + elapsed + elapsed * self.drift_ppm // 1000000

    def ntp_time(self, host):
        return self.answers.pop(0) if self.answers else self.true_ms()


def _clock(hal, interval_s=3600, boot=77):
    lines = []
    log = Log(hal.ticks_ms, lines.append)
    c = Clock(hal, log, "pool.ntp.org", interval_s, boot)
    log.uptime_ms = c.uptime_ms
    return c, lines


def _run(hal, clock, ms, step_ms=1000):
    for _ in range(ms // step_ms):
        hal.t.advance_ms(step_ms)
        clock.tick(hal.ticks_ms())


def test_uptime_counts_through_three_weeks_of_wrapping_ticks():
    hal = TimeHal()
    clock, lines = _clock(hal)
    seconds = 0
    for _ in range(21 * 24 * 60):  # a step a minute (a board steps every 50 ms)
        hal.t.advance_ms(60000)
        if clock.tick(hal.ticks_ms()):
            seconds += 1
    assert clock.uptime_s == 21 * 86400 and seconds == 21 * 24 * 60
    assert clock.uptime_ms() == 21 * DAY_MS
    clock._log.info("t", "x")
    assert lines[-1].startswith("1814400.000 I t: x")  # the log's uptime never wraps


def test_uptime_keeps_the_milliseconds_between_steps():
    hal = TimeHal()
    clock, _ = _clock(hal)
    for _ in range(1000):
        hal.t.advance_ms(37)
        clock.tick(hal.ticks_ms())
    assert clock.uptime_s == 37 and clock.uptime_ms() == 37000


def test_first_sync_sets_an_rtc_that_read_2000_and_timestamps_follow():
    hal = TimeHal(rtc=Y2000)
    clock, lines = _clock(hal)
    _run(hal, clock, 5000)
    assert clock.epoch_ms() < 0  # not synced: an uptime, not a date
    assert clock.sync() and clock.synced
    assert abs(hal.epoch_ms() - hal.true_ms()) <= 1
    assert any("synced with pool.ntp.org: 2026-" in l and " UTC " in l for l in lines), lines
    t = clock.epoch_ms()
    assert abs(t - hal.true_ms()) <= 1


def test_resync_every_interval_logs_the_correction_in_ms_and_timestamps_never_go_back():
    hal = TimeHal(drift_ppm=20000)  # 2 % fast: 72 s an hour
    clock, lines = _clock(hal, interval_s=600)
    assert clock.sync()
    stamps = []
    syncs = 0
    for _ in range(3 * 3600 // 5):  # 3 hours, a reading every 5 s
        _run(hal, clock, 5000)
        if clock.sync_due():
            assert clock.sync()
            syncs += 1
        stamps.append(clock.epoch_ms())
    assert syncs == 18
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # strictly increasing
    corrections = [l for l in lines if "re-synced with pool.ntp.org: clock corrected by -" in l]
    assert len(corrections) == 18
    assert "by -12000 ms" in corrections[-1] or "by -11999 ms" in corrections[-1], corrections[-1]
    assert abs(stamps[-1] - hal.true_ms()) < 12000 + 5000  # never further off than one period


def test_a_backward_step_holds_timestamps_until_the_clock_catches_up():
    hal = TimeHal()
    clock, _ = _clock(hal, interval_s=60)
    assert clock.sync()
    hal.epoch_ms(hal.epoch_ms() + 30000)  # the RTC jumps 30 s ahead
    stamps = []
    synced_at = None
    for _ in range(55):  # a reading every 2 s; the sync after a minute puts the clock back
        _run(hal, clock, 2000)
        if clock.sync_due():
            assert clock.sync() and synced_at is None
            synced_at = len(stamps)
        stamps.append(clock.epoch_ms())
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # strictly increasing throughout
    held = stamps[synced_at:synced_at + 15]
    assert held == list(range(held[0], held[0] + 15))  # last + 1 ms while the clock catches up
    assert abs(stamps[-1] - hal.true_ms()) <= 1


def test_implausible_answers_are_ignored_and_a_big_step_needs_three_in_a_row():
    hal = TimeHal()
    clock, lines = _clock(hal)
    hal.answers = [Y2000, 4200000000000, None]
    assert not clock.sync() and not clock.sync() and not clock.sync()
    assert not clock.synced
    assert sum("not a date this meter can be at" in l for l in lines) == 2
    assert any("answered 2000-01-01 00:00:00 UTC" in l for l in lines), lines
    assert clock.sync()
    t = hal.true_ms()
    hal.answers = [t + DAY_MS, t + DAY_MS, t + DAY_MS]  # a server a day ahead
    assert not clock.sync() and not clock.sync()
    assert abs(hal.epoch_ms() - t) <= 1
    assert sum("would move the clock by 86400 s; not believed" in l for l in lines) == 2
    assert clock.sync()  # the third in a row: the clock is what is wrong
    assert abs(hal.epoch_ms() - (t + DAY_MS)) <= 1
    hal.answers = [t + DAY_MS + 50000]  # within a minute of the clock: believed at once
    assert clock.sync() and abs(hal.epoch_ms() - (t + DAY_MS + 50000)) <= 1


def test_readings_before_the_first_sync_are_placed_in_time_once_synced():
    hal = TimeHal(rtc=Y2000)
    clock, _ = _clock(hal)
    q = ReadingQueue(32)
    truth = []
    for i in range(10):  # a reading a minute, NTP unreachable
        _run(hal, clock, 60000)
        q.push(clock.epoch_ms(), 100 + i, 5)
        truth.append(hal.true_ms())
    assert all(r[0] < 0 for r in q.peek(10))
    assert clock.sync()
    got = clock.resolve(q, 20)
    assert [r[1] for r in got] == list(range(100, 110))
    assert all(abs(r[0] - t) <= 1 for r, t in zip(got, truth))
    assert got[-1][0] < clock.epoch_ms()  # before every reading stamped from now on


def test_unsynced_readings_go_alone_without_a_timestamp_only_when_fresh():
    hal = TimeHal()
    clock, lines = _clock(hal)
    q = ReadingQueue(32)
    for i in range(3):
        q.push(clock.epoch_ms(), i, 0)
        _run(hal, clock, 60000)  # waited offline: stale by the time it could be sent
    q.push(clock.epoch_ms(), 3, 0)
    q.push(clock.epoch_ms(), 4, 0)
    got = clock.resolve(q, 20)
    assert got == [(0, 3, 0)]  # alone, for the server to stamp on arrival
    assert len(q) == 2 and q.peek(1)[0][1] == 3  # dropped only the stale ones, from the front
    assert any("3 readings from before the clock was set dropped" in l for l in lines)


def test_unsynced_readings_of_an_earlier_boot_are_dropped_never_misplaced():
    hal = TimeHal()
    earlier, _ = _clock(hal, boot=5)
    q = ReadingQueue(32)
    q.push(0, 1, 0)  # a reading stored before boot ids existed: no time either
    for i in range(3):
        _run(hal, earlier, 60000)
        q.push(earlier.epoch_ms(), 10 + i, 0)
    clock, lines = _clock(hal, boot=6)  # the next boot
    _run(hal, clock, 1000)
    q.push(clock.epoch_ms(), 20, 0)
    assert clock.sync()
    got = clock.resolve(q, 20)
    assert [r[1] for r in got] == [20] and got[0][0] > 0
    assert any("4 readings from before the clock was set dropped" in l for l in lines)


def test_timestamped_readings_pass_unchanged_and_mixed_batches_keep_their_order():
    hal = TimeHal()
    clock, _ = _clock(hal)
    q = ReadingQueue(32)
    q.push(TRUE0 - 5000, 1, 0)  # a previous boot's timestamped reading
    _run(hal, clock, 1000)
    q.push(clock.epoch_ms(), 2, 0)
    assert clock.sync()
    got = clock.resolve(q, 20)
    assert got[0] == (TRUE0 - 5000, 1, 0) and got[1][1] == 2 and got[0][0] < got[1][0]


# --- the SNTP packet (firmware/sync.py) -------------------------------------------------------

STAMP = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def _reply(secs=3973000000, frac=0x80000000, li=0, vn=4, mode=4, stratum=2, origin=STAMP):
    r = bytearray(48)
    r[0] = li << 6 | vn << 3 | mode
    r[1] = stratum
    r[24:32] = origin
    r[40:44] = secs.to_bytes(4, "big")
    r[44:48] = frac.to_bytes(4, "big")
    return r


def test_sntp_request_carries_its_stamp():
    q = request(STAMP)
    assert len(q) == 48 and q[0] == 0x23 and bytes(q[40:48]) == STAMP


def test_sntp_reply_checks():
    ms = (3973000000 - 2208988800) * 1000 + 500
    assert parse(_reply(), STAMP) == ms
    assert parse(bytes(_reply()) + b"\0" * 20, STAMP) == ms  # extension fields: ignored
    assert parse(_reply(vn=3), STAMP) == ms
    assert parse(None, STAMP) is None
    assert parse(_reply()[:47], STAMP) is None  # short
    assert parse(_reply(li=3), STAMP) is None  # the server's clock is not synchronized
    assert parse(_reply(mode=3), STAMP) is None  # not a server's reply
    assert parse(_reply(vn=2), STAMP) is None
    assert parse(_reply(stratum=0), STAMP) is None  # kiss-of-death
    assert parse(_reply(stratum=16), STAMP) is None
    assert parse(_reply(origin=b"\0" * 8), STAMP) is None  # answers another request
    assert parse(_reply(secs=0, frac=0), STAMP) is None  # no time to give
    # After 2036-02-07 the 32-bit seconds wrap: small counts are the next era.
    assert parse(_reply(secs=100, frac=0), STAMP) == (100 + 4294967296 - 2208988800) * 1000
