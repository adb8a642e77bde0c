import os

from firmware.backlog import Backlog
from firmware.pacing import Pacer
from support import Clock, ListLog, fresh_dir


def _drain(b, batch=20):
    out = []
    while len(b):
        got = b.peek(batch)
        out.extend(got)
        b.drop(len(got))
    return out


def _fill(b, n, start=0):
    for i in range(start, start + n):
        b.push(1_795_000_000_000 + i * 60_000, 1000 + i, i % 50)


def test_readings_come_back_in_order_through_ram_and_flash():
    fresh_dir()
    b = Backlog(ListLog(), 2880)
    _fill(b, 250)
    assert len(b) == 250 and b.flash_points() >= 240
    got = _drain(b, 17)
    assert [r[1] for r in got] == list(range(1000, 1250))
    assert len(b) == 0 and os.listdir("state/buf") == []


def test_a_reading_leaves_only_when_dropped_after_its_puback():
    fresh_dir()
    b = Backlog(ListLog(), 2880)
    _fill(b, 45)
    first = b.peek(20)
    assert b.peek(20) == first  # no PUBACK yet: the same batch again
    b.drop(20)
    assert b.peek(1)[0] != first[0]


def test_backlog_survives_a_reset_and_replays_from_flash():
    fresh_dir()
    log = ListLog()
    b = Backlog(log, 2880)
    _fill(b, 130)
    b.drop(0)
    on_flash = b.flash_points()
    b2 = Backlog(log, 2880)  # power cut: RAM gone, flash kept
    b2.load()
    assert len(b2) == on_flash
    got = _drain(b2)
    assert [r[1] for r in got] == list(range(1000, 1000 + on_flash))


def test_power_cut_during_a_spill_leaves_the_old_chunk_and_a_stray_tmp():
    fresh_dir()
    log = ListLog()
    b = Backlog(log, 2880)
    _fill(b, 40)
    names = sorted(os.listdir("state/buf"))
    with open("state/buf/" + names[-1], "rb") as f:
        good = f.read()
    with open("state/buf/" + names[-1][:-4] + ".tmp", "wb") as f:
        f.write(good[:33])  # what a cut mid-append leaves
    b2 = Backlog(log, 2880)
    b2.load()
    assert len(b2) == 40 and not any(n.endswith(".tmp") for n in os.listdir("state/buf"))


def test_corrupt_chunk_is_discarded_with_a_log_line():
    fresh_dir()
    log = ListLog()
    b = Backlog(log, 2880)
    _fill(b, 140)
    names = sorted(os.listdir("state/buf"))
    with open("state/buf/" + names[0], "r+b") as f:
        f.seek(5)
        f.write(b"\x00\x01")
    b2 = Backlog(log, 2880)
    b2.load()
    assert any("unreadable; discarded" in line for line in log.lines)
    # The first chunk (readings 0..119) is gone; the second, intact one is still there.
    assert [r[1] for r in _drain(b2)] == list(range(1120, 1140))


def test_when_full_the_oldest_are_thinned_never_the_newest():
    fresh_dir()
    b = Backlog(ListLog(), 300)
    _fill(b, 1000)
    assert b.flash_points() <= 300 and b.thinned > 0
    got = _drain(b)
    idx = [r[1] for r in got]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert idx[-60:] == list(range(1940, 2000))  # the newest are all there, unthinned
    assert idx[0] >= 1000 and len(idx) < 1000


def test_a_long_outage_merges_thinned_chunks_instead_of_growing_the_file_count():
    fresh_dir()
    log = ListLog()
    b = Backlog(log, 300, files_max=6)
    _fill(b, 4000)  # 4000 readings into room for 300: the oldest chunks are thinned to a few
    assert b.flash_points() <= 300
    assert len(os.listdir("state/buf")) <= 6
    b2 = Backlog(log, 300, files_max=6)  # and what is on flash reads back the same after a reset
    b2.load()
    assert b2.flash_points() == b.flash_points()
    idx = [r[1] for r in _drain(b2)]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)  # in order, none twice
    assert idx[-60:] == list(range(4940, 5000))  # the newest are all there, unthinned


def test_pacer_allows_a_burst_then_paces_to_the_cloud_limits():
    clk = Clock()
    p = Pacer(clk.ticks_diff, clk.ticks_ms())
    sent = 0
    for _ in range(10_000):
        if p.allow(60, clk.ticks_ms()):
            sent += 1
        clk.advance_ms(10)  # 100 s of trying every 10 ms
    # data points are the binding limit: <= 1600/min at 80 % of the Free plan, plus the burst
    assert sent * 60 <= 1600 * 100 / 60 + 1600
    assert sent * 60 >= 1600 * 100 / 60 * 0.9
    clk.advance_ms(3_600_000)
    hour = 0
    for _ in range(3600):
        if p.allow(3, clk.ticks_ms()):
            hour += 1
        clk.advance_ms(1000)
    assert hour <= 5600 and hour == 3600  # live reporting (1 message/s here) never waits


def test_pacer_messages_per_second():
    clk = Clock()
    p = Pacer(clk.ticks_diff, clk.ticks_ms())
    assert sum(1 for _ in range(100) if p.allow(1, clk.ticks_ms())) == 40


def test_pacer_a_week_long_outage_does_not_stall_telemetry():
    # On the ESP32's 2**30 ticks a bucket's tick left unvisited for 6.2 to 12.4 days reads as
    # lying in the future: nothing refilled and all telemetry stopped for up to 6 more days.
    # The pipeline visits the pacer once a second, sending or not.
    clk = Clock()
    p = Pacer(clk.ticks_diff, clk.ticks_ms())
    while p.allow(60, clk.ticks_ms()):  # a replayed backlog empties the buckets
        pass
    for _ in range(7 * 24):  # a week offline (visited every hour here)
        clk.advance_ms(3_600_000)
        p.tick(clk.ticks_ms())
    assert p.allow(60, clk.ticks_ms())  # the first message after the outage goes at once
    sent = 0
    for _ in range(6000):  # and the limits still hold: a minute of trying every 10 ms
        if p.allow(60, clk.ticks_ms()):
            sent += 1
        clk.advance_ms(10)
    assert 1600 // 60 <= sent <= 2 * 1600 // 60 + 1


def test_the_flash_half_is_loaded_only_while_readings_wait_on_flash():
    # firmware/backlog.py: online, readings leave from the RAM ring and the chunk-file code
    # (firmware/backlog_flash.py, about 2.7 KB of heap) is not loaded; an outage's first spill
    # loads it, and it goes again once the flash is drained.
    import sys
    name = "firmware.backlog_flash"
    fresh_dir()
    b = Backlog(ListLog(), 2880)
    b.load()  # nothing on flash: loaded for the boot scan only
    assert name not in sys.modules
    _fill(b, 19)
    assert name not in sys.modules and b.flash_points() == 0
    _fill(b, 131, start=19)  # the first spill at 20
    assert name in sys.modules and b.flash_points() == 140 and len(b) == 150
    got = []
    while b.flash_points():
        assert name in sys.modules
        batch = b.peek(17)
        got.extend(batch)
        b.drop(len(batch))
    assert name not in sys.modules  # flash drained, 10 readings in the ring
    got.extend(_drain(b))
    assert [r[1] for r in got] == list(range(1000, 1150))
    # After a reset with readings on flash, it stays until they are sent.
    _fill(b, 60, start=150)
    b2 = Backlog(ListLog(), 2880)
    b2.load()
    assert name in sys.modules and len(b2) == 60
    assert [r[1] for r in _drain(b2)] == list(range(1150, 1210))
    assert name not in sys.modules and os.listdir("state/buf") == []
