"""Every flash write site under a failing chip (EIO) and a full filesystem (ENOSPC): the meter
never resets for a storage error, keeps counting and reporting, tries a failing chip at a
bounded pace and gets its state back onto flash once writes work again (tests/unit/flashfaults.py
makes the writes fail; README: when the flash fails)."""

import builtins
import errno
import os
import sys

import pytest

from fakes import FakeBroker
from flashfaults import FlashFaults
from harness import Rig
from firmware import entry
from firmware import states as M
from firmware.backlog import Backlog
from firmware.log import Log
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
TOKEN = "tok-AAAA-1111"
TELE = "v1/devices/me/telemetry"
ERRNOS = pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Store writes state/ here: this test's flash


@pytest.fixture
def faults(monkeypatch):
    return FlashFaults(monkeypatch)


def provisioned():
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": TOKEN, "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.tokens[TOKEN] = NAME
    return b


def on_flash(name):
    """What a fresh boot would read (the store's RAM copy of refused records is not flash)."""
    return Store(Log(lambda: 0, lambda line: None)).read(name)


def in_run(rig):
    return rig.meter.state == M.RUN


def readings(rig):
    out = []
    for m in rig.broker.messages(TELE):
        for p in (m if isinstance(m, list) else [m]):
            v = p.get("values", p)
            if "pulses" in v:
                out.append((p.get("ts"), v["pulses"]))
    return out


def health(rig):
    return [m.get("values", m) for m in rig.broker.messages(TELE)
            if not isinstance(m, list) and "uptime_s" in m.get("values", m)]


def running(faults, **cfg):
    b = provisioned()
    rig = Rig(b, **cfg)
    faults.clock = b.now_ms
    assert rig.run(60_000, lambda: in_run(rig))
    return rig


def flap_wifi(rig):
    # The session drops and the meter reconnects (a new CONNECT, the marker checked again).
    rig.hal.wifi_up = False
    rig.run(5_000)
    rig.hal.wifi_up = True
    assert rig.run(120_000, lambda: in_run(rig))


# --- the store ---------------------------------------------------------------------------------

@ERRNOS
def test_a_refused_record_is_kept_in_ram_written_again_by_flush_and_logged_once(faults, err):
    lines = []
    s = Store(Log(lambda: 0, lines.append))
    assert s.write("pulses", {"index": 1}) is True
    faults.fail(err)
    assert s.write("pulses", {"index": 2}) is False
    assert s.write("pulses", {"index": 3}) is False
    assert s.read("pulses") == {"index": 3}  # this boot carries on with the newest
    assert on_flash("pulses") == {"index": 1}  # the flash keeps the one before
    assert s.errors == 2
    assert len([line for line in lines if "not saved" in line]) == 1  # once per spell
    assert s.flush() is False and s.errors == 3  # still failing: one attempt, no more
    faults.heal()
    assert s.flush() is True and s.flush() is True
    assert on_flash("pulses") == {"index": 3}
    assert lines[-1].endswith("store: flash writes work again (3 refused since boot)")
    faults.fail(err)
    s.write("pulses", {"index": 4})  # a new spell: a new line
    assert len([line for line in lines if "not saved" in line]) == 2


def test_a_record_refused_at_its_rename_leaves_no_copy_behind_and_keeps_the_old_one(faults):
    s = Store(Log(lambda: 0, lambda line: None))
    s.write("creds", {"type": "ACCESS_TOKEN", "token": "a"})
    faults.fail(errno.ENOSPC, ops=("rename",))  # the .tmp was written, the rename refused
    assert s.write("creds", {"type": "ACCESS_TOKEN", "token": "b"}) is False
    assert faults.count("rename", "creds") == 1
    assert sorted(os.listdir("state")) == ["creds.json"]  # no .tmp holding the last blocks
    assert on_flash("creds")["token"] == "a"  # a power cut now boots with the old one
    faults.heal()
    assert s.flush() is True and on_flash("creds")["token"] == "b"


def test_a_refused_remove_reads_as_absent_and_is_done_by_flush(faults):
    lines = []
    s = Store(Log(lambda: 0, lines.append))
    s.write("attrs", {"hash": "x"})
    faults.fail(errno.EIO)
    assert s.remove("attrs") is False and s.read("attrs") is None
    assert on_flash("attrs") == {"hash": "x"}
    assert s.remove("absent") is True  # nothing to remove: nothing refused
    faults.heal()
    assert s.flush() is True and on_flash("attrs") is None
    assert lines[-1].endswith("store: flash writes work again (1 refused since boot)")


# --- the pulse index (firmware/pipeline.py) ------------------------------------------------------

@ERRNOS
def test_the_index_the_flash_refuses_still_reaches_the_server_and_is_saved_once_it_works(
        faults, err):
    rig = running(faults, health_interval_s=60)
    rig.pulse(10)
    rig.run(70_000)
    assert on_flash("pulses") == {"index": 10}
    t0 = rig.broker.now_ms()
    faults.fail(err)
    for _ in range(10):  # ten minutes, 20 pulses a minute
        rig.pulse(20, gap_ms=1000)
        rig.run(40_000)
    rig.run(70_000)
    minutes = (rig.broker.now_ms() - t0) / 60_000
    seen = [p for _t, p in readings(rig)]
    # Readings carry the index the store holds in RAM: every pulse reaches the server, and
    # the index never goes backwards.
    assert seen[-1] == 210 and seen == sorted(seen)
    assert on_flash("pulses") == {"index": 10} and rig.hal.resets == 0
    # Paced: one attempt per persist_interval_s (60 s) and one flush a minute at most.
    refused = faults.count(match="pulses")
    assert 5 <= refused <= 2 * minutes + 2, (refused, minutes)
    h = health(rig)
    assert h[0]["flash_errors"] == 0 and h[-1]["flash_errors"] >= refused
    faults.heal()
    rig.run(70_000)
    assert on_flash("pulses") == {"index": 210}
    assert "flash writes work again" in rig.text()


def test_a_power_cut_while_the_flash_refuses_the_index_restarts_from_the_index_on_flash(faults):
    # The trade-off (README: when the flash fails): readings carried the index the store held
    # in RAM; the flash kept the last one it took, and a power cut goes back to that.
    rig = running(faults)
    rig.pulse(30)
    rig.run(70_000)
    faults.fail(errno.EIO)
    rig.pulse(40)
    rig.run(70_000)
    assert readings(rig)[-1][1] == 70
    rig.cut_power()
    rig.power_up()
    assert rig.pulses.index == 30  # the 40 pulses counted since the last saved index are lost
    assert rig.run(60_000, lambda: in_run(rig))
    rig.run(70_000)
    assert readings(rig)[-1][1] == 30  # and the server sees the index go back by them


# --- credentials (firmware/supervisor.py) ----------------------------------------------------------

def test_credentials_refused_once_after_success_are_written_again_before_anything_else(faults):
    b = provisioned()
    rig = Rig(b, start=False)
    faults.clock = b.now_ms
    faults.fail(errno.EIO, match="creds", times=1)
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    (refused,) = [r for r in faults.refused if "creds" in r[1]]
    saved = [d for d in faults.done if d[0] == "rename" and "creds" in d[1]]
    first = [c for c in b.connects if c[1] == TOKEN][0]
    assert saved[0][3] - refused[3] <= 1_000  # in place: within the same step
    assert first[3] >= saved[0][3]  # nothing used them before they were on flash
    assert on_flash("creds") == {"type": "ACCESS_TOKEN", "token": TOKEN}
    assert "held in RAM only" not in rig.text()


@ERRNOS
def test_credentials_the_flash_keeps_refusing_are_used_from_ram_and_never_provisioned_again(
        faults, err):
    b = provisioned()
    rig = Rig(b, start=False)
    faults.clock = b.now_ms
    faults.fail(err, match="creds")
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    t0 = b.now_ms()
    assert "credentials held in RAM only" in rig.text()
    for _ in range(3):
        flap_wifi(rig)
        rig.pulse(5)
        rig.run(60_000)
    assert len(b.provision_requests) == 1  # the platform already has this device
    assert [c[1] for c in b.connects if c[0] != "provision"] == [TOKEN] * 4
    assert readings(rig)[-1][1] == 15
    minutes = (b.now_ms() - t0) / 60_000
    assert faults.count(match="creds") <= 3 + minutes + 1  # 3 in place, then once a minute
    assert on_flash("creds") is None
    faults.heal()
    rig.run(70_000)
    assert on_flash("creds") == {"type": "ACCESS_TOKEN", "token": TOKEN}


def test_a_device_token_accepted_while_the_flash_refuses_it_is_used_from_ram(faults):
    b = FakeBroker()
    b.add_device(NAME, "my-own-device-token-123")  # FAILURE, then the configured token
    rig = Rig(b, start=False, access_token="my-own-device-token-123")
    faults.fail(errno.EIO, match="creds")
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert faults.count(match="creds") >= 3 and on_flash("creds") is None
    flap_wifi(rig)
    assert len(b.provision_requests) == 1


# --- the attributes marker (firmware/attributes.py) ---------------------------------------------------

@ERRNOS
def test_a_refused_attributes_marker_holds_for_this_boot_and_means_one_more_send_after_a_cut(
        faults, err):
    b = provisioned()
    rig = Rig(b, start=False)
    faults.fail(err, match="attrs")
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    flap_wifi(rig)
    flap_wifi(rig)
    assert len(b.attributes[NAME]) == 1  # not again on every reconnect: RAM knows
    assert faults.count(match="attrs") >= 1 and on_flash("attrs") is None
    rig.cut_power()
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert len(b.attributes[NAME]) == 2  # at least once, never lost
    faults.heal()
    rig.run(70_000)
    assert on_flash("attrs") is not None
    rig.cut_power()
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert len(b.attributes[NAME]) == 2


def test_a_refused_clear_of_the_marker_still_resends_the_attributes_when_asked(faults):
    rig = running(faults)
    assert len(rig.broker.attributes[NAME]) == 1
    faults.fail(errno.EIO, match="attrs")
    rig.meter.request_reprovision("test")  # the marker's remove is refused
    assert faults.count("remove", "attrs") == 1
    assert rig.run(120_000, lambda: in_run(rig))
    assert len(rig.broker.attributes[NAME]) == 2


# --- the last error (firmware/supervisor.py) -----------------------------------------------------

@ERRNOS
def test_the_last_error_the_flash_refuses_is_tried_once_a_minute_and_saved_once_it_works(
        faults, err):
    rig = running(faults)
    t0 = rig.broker.now_ms()
    faults.fail(err, match="lasterr")
    for i in range(30):  # a new error every 10 s for 5 minutes
        rig.log.error("test", "fault number %d", i)
        rig.run(10_000)
    minutes = (rig.broker.now_ms() - t0) / 60_000
    assert 1 <= faults.count(match="lasterr") <= minutes + 1
    assert rig.meter.state == M.RUN and rig.hal.resets == 0
    faults.heal()
    rig.run(70_000)
    assert on_flash("lasterr")["msg"].startswith("test: fault number 29")


# --- the gesture counter (firmware/gesture.py) --------------------------------------------------------

@ERRNOS
def test_a_boot_with_a_flash_that_refuses_every_write_runs_and_reports(faults, err):
    rig = running(faults)
    rig.cut_power()
    faults.fail(err)
    rig.power_up()  # the gesture's boot count is the first write of a boot
    assert faults.count(match="boot") == 1
    assert rig.run(60_000, lambda: in_run(rig))
    rig.pulse(10)
    rig.run(130_000)
    assert readings(rig)[-1][1] == 10
    assert rig.hal.resets == 0 and rig.meter.state == M.RUN


def test_a_refused_clear_of_the_gesture_count_is_written_once_the_flash_works(faults):
    rig = running(faults)
    rig.run(15_000)  # this boot stays up past the window: the count goes back to 0
    rig.cut_power()
    faults.fail(errno.EIO, match="boot", after=2)  # the boot count (open, rename) goes through
    rig.power_up()
    assert on_flash("boot")["n"] == 1
    rig.run(15_000)  # past the 10 s window
    assert faults.count(match="boot") == 1 and on_flash("boot")["n"] == 1
    g = rig.meter._gesture  # None: unloaded after the window, nothing requested
    assert g is None or g.requested is False
    rig.run(180_000)
    assert faults.count(match="boot") <= 4  # once a minute at most
    faults.heal()
    rig.run(70_000)
    assert on_flash("boot") == {"n": 0, "req": False}


# --- the crash counter (firmware/entry.py) ------------------------------------------------------

@ERRNOS
def test_the_crash_counter_is_best_effort(faults, err):
    s = Store(Log(lambda: 0, lambda line: None))
    assert entry.pause_ms(s) == 10_000
    faults.fail(err)
    assert entry.pause_ms(s) == 20_000  # counted in RAM: the pause still grows
    entry.forget(s)
    assert s.errors == 2 and on_flash("crash") == {"n": 1}
    faults.heal()
    assert s.flush() and on_flash("crash") is None


# --- the backlog (firmware/backlog.py) ------------------------------------------------------------

def _fill(b, n, start=0):
    for i in range(start, start + n):
        b.push(1_795_000_000_000 + i * 60_000, 1000 + i, i % 50)


def _drain(b):
    out = []
    while len(b):
        got = b.peek(20)
        out.extend(got)
        b.drop(len(got))
    return out


def _log():
    lines = []
    return Log(lambda: 0, lines.append), lines


def test_readings_the_flash_refuses_wait_in_ram_and_reach_the_server(faults):
    rig = running(faults)
    rig.hal.wifi_up = False
    faults.fail(errno.EIO, match="buf")
    for _ in range(25):  # 25 minutes offline: 25 readings, spills from the 20th on
        rig.pulse(2)
        rig.run(60_000)
    refused = faults.count(match="buf")  # each attempt stops at its first refused operation
    assert 1 <= refused <= 6  # one chunk write per reading at most
    assert rig.backlog.flash_points() == 0 and len(rig.backlog) >= 25
    rig.hal.wifi_up = True  # the chip still fails: the readings leave from RAM
    assert rig.run(120_000, lambda: in_run(rig))
    rig.run(30_000)
    pts = readings(rig)
    assert [t for t, _ in pts] == sorted(t for t, _ in pts)
    assert pts[-1][1] == 50 and len(pts) >= 26 and rig.hal.resets == 0
    faults.heal()  # spills work again: the next outage goes to flash
    rig.hal.wifi_up = False
    for _ in range(25):
        rig.run(60_000)
    assert rig.backlog.flash_points() >= 20


def test_spills_refused_then_working_again_lose_nothing_but_the_ring_overflow(faults):
    log, lines = _log()
    b = Backlog(log, 2880)
    b.load()
    _fill(b, 100)  # five spills: all on flash
    faults.fail(errno.EIO)
    _fill(b, 40, start=100)  # 21 spills refused; the ring holds the newest 32
    assert b.errors == 21 and len(b) == 132 and b.flash_points() == 100
    assert len([line for line in lines if "flash write failed" in line]) == 1
    faults.heal()
    _fill(b, 20, start=140)
    assert b.flash_points() >= 120
    got = [r[1] for r in _drain(b)]
    # Only the ring's overflow is gone: 8 while the spills were refused, and one more as the
    # first push after found the ring full (their energy is in the later readings).
    assert got == list(range(1000, 1100)) + list(range(1109, 1160))
    assert any("flash writes work again" in line for line in lines)


def test_a_refused_thin_is_tried_again_at_the_next_spill(faults):
    b = Backlog(_log()[0], 300)
    b.load()
    _fill(b, 300)  # at the bound: chunks of 120, 120, 60
    faults.fail(errno.EIO, after=2)  # the spill's own write (open, rename) goes through
    _fill(b, 20, start=300)
    assert b.errors == 1 and faults.count("open", "buf/00000001") == 1
    assert b.flash_points() == 320  # over the bound until the next spill
    faults.heal()
    _fill(b, 20, start=320)
    assert b.flash_points() <= 300
    got = [r[1] for r in _drain(b)]
    assert got == sorted(got) and got[-40:] == list(range(1300, 1340))


def test_a_refused_merge_is_tried_again_at_the_next_spill(faults):
    b = Backlog(_log()[0], 2880, files_max=2)
    from firmware import backlog_flash  # the one the faults patched (tests/unit/flashfaults.py)
    b._rec = bytearray(20)  # the record buffer the Backlog gives its flash half when loaded
    for seq in (1, 2, 3):  # what thinning leaves: small chunks (written as a spill writes them)
        backlog_flash._write_chunk(b, seq, None, 0, [
            (1_795_000_000_000 + (seq * 10 + i) * 60_000, 1000 + seq * 10 + i, 0)
            for i in range(10)])
    b.load()
    faults.fail(errno.EIO, after=2)  # the spill's own write goes through, the merge's not
    _fill(b, 20, start=100)
    assert b.errors == 1 and len(os.listdir("state/buf")) == 3
    faults.heal()
    _fill(b, 20, start=120)
    assert len(os.listdir("state/buf")) <= 2
    got = [r[1] for r in _drain(b)]
    assert got == [1000 + i for i in range(10, 40)] + list(range(1100, 1140))


def test_a_refused_remove_after_the_puback_leaves_the_chunk_for_the_next_boot(faults):
    b = Backlog(_log()[0], 2880)
    b.load()
    _fill(b, 260)
    faults.fail(errno.EIO, ops=("remove",))
    got = _drain(b)
    assert [r[1] for r in got] == list(range(1000, 1260)) and b.errors >= 1
    faults.heal()
    b2 = Backlog(_log()[0], 2880)  # at least once: the acknowledged chunks are sent again
    b2.load()
    assert len(b2) >= 120


def test_a_full_filesystem_drops_the_oldest_chunk_and_keeps_the_newest_readings(faults):
    log, lines = _log()
    b = Backlog(log, 100000)
    b.load()
    _fill(b, 600)  # five full chunk files
    faults.full(files=6)  # room for one more block: a new chunk, or a copy, not both
    _fill(b, 2400, start=600)  # a long outage on
    assert faults.count() >= 1 and b.errors >= 1
    assert len(os.listdir("state/buf")) <= 6 and b.max_points < 100000
    assert sum(1 for line in lines if "flash full" in line) == 1  # one line, not one a spill
    got = [r[1] for r in _drain(b)]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[-60:] == list(range(3940, 4000))  # the newest, unthinned


# --- buffer_points bounded by the filesystem ---------------------------------------------------

def _statvfs(free_blocks, blocks=512):
    # As MicroPython's LittleFS answers: 4 KB blocks; free wraps past 2**32 when full.
    return lambda path: (4096, 4096, blocks, free_blocks, free_blocks, 0, 0, 0, 0, 255)


def test_buffer_points_is_bounded_by_what_the_filesystem_holds(monkeypatch):
    log, lines = _log()
    monkeypatch.setattr(os, "statvfs", _statvfs(470))  # a 2 MiB flash with the firmware
    b = Backlog(log, 100000)
    b.load()
    # 470 free blocks, 80 kept for other files, 1/16 for directory entries: 365; one for the
    # copy a rewrite makes, one for a partly filled newest chunk: 363 chunks of 120 readings.
    assert b.max_points == 43560 and b.files_max == 48
    assert lines[-1].endswith(" W backlog: up to 43560 readings on flash (buffer_points 100000; "
                              "1880 KB free, 320 KB kept for other files)")
    b = Backlog(log, 2880)
    b.load()
    assert b.max_points == 2880 and " I backlog: up to 2880 readings on flash (buffer_points " \
        "2880; 1880 KB free" in lines[-1]


def test_a_full_filesystem_at_boot_keeps_the_readings_in_ram(monkeypatch, faults):
    monkeypatch.setattr(os, "statvfs", _statvfs(2**32 - 3))  # LittleFS, full
    b = Backlog(_log()[0], 2880)
    b.load()
    assert b.max_points == 0
    _fill(b, 100)
    assert faults.count(refused=False) == 0  # no chunk written
    assert [r[1] for r in _drain(b)] == list(range(1068, 1100))  # the ring: the newest 32


class _NoRoom:
    """Importing firmware/backlog_flash.py fails for want of memory while `on` (on the meter:
    no free block for its bytecode at that moment)."""

    def __init__(self, monkeypatch):
        self.on = True
        real = builtins.__import__

        def hook(name, globals=None, locals=None, fromlist=(), level=0):
            if self.on and (name == "firmware.backlog_flash" or
                            name == "firmware" and fromlist and "backlog_flash" in fromlist):
                raise MemoryError("memory allocation failed, allocating 2112 bytes")
            return real(name, globals, locals, fromlist, level)

        monkeypatch.setattr(builtins, "__import__", hook)


def test_no_memory_for_the_flash_code_keeps_the_readings_in_ram_until_there_is(monkeypatch):
    log, lines = _log()
    b = Backlog(log, 2880)
    b.load()
    room = _NoRoom(monkeypatch)
    _fill(b, 30)  # 11 spills tried, each without the room to load the code
    assert len(b) == 30 and b.flash_points() == 0 and b.errors == 0  # the flash refused nothing
    assert "firmware.backlog_flash" not in sys.modules
    assert len([line for line in lines if "no memory to load their code" in line]) == 1
    room.on = False
    _fill(b, 1, start=30)  # room again: the overdue spill goes to flash
    assert b.flash_points() == 20 and len(b) == 31
    _fill(b, 49, start=31)
    assert [r[1] for r in _drain(b)] == list(range(1000, 1080))  # none lost, in order
    assert "firmware.backlog_flash" not in sys.modules


def test_no_memory_for_the_flash_code_at_boot_leaves_the_chunks_for_the_next_boot(monkeypatch):
    b = Backlog(_log()[0], 2880)
    b.load()
    _fill(b, 60)  # three spills: on flash, as a previous boot left them
    with open("state/buf/00000001.bin", "rb") as f:
        chunk = f.read()
    log, lines = _log()
    room = _NoRoom(monkeypatch)
    b2 = Backlog(log, 2880)
    b2.load()  # no crash, no reset: this boot keeps its offline readings in RAM
    assert b2.max_points == 0 and len(b2) == 0
    assert any("offline readings stay in RAM this boot" in line for line in lines)
    _fill(b2, 40, start=60)  # an outage: nothing is written over the chunk left on flash
    assert len(b2) == 32 and b2.flash_points() == 0
    with open("state/buf/00000001.bin", "rb") as f:
        assert f.read() == chunk
    room.on = False
    b3 = Backlog(_log()[0], 2880)  # the next boot, with room: the chunks are sent
    b3.load()
    assert [r[1] for r in _drain(b3)] == list(range(1000, 1060))
