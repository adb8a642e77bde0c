import os

from firmware.store import Store
from support import ListLog, fresh_dir


def _store():
    fresh_dir()
    log = ListLog()
    return Store(log), log


def test_round_trip_and_missing_record():
    s, log = _store()
    assert s.read("creds") is None and log.lines == []  # absent is normal: no warning
    s.write("creds", {"type": "ACCESS_TOKEN", "token": "abc"})
    assert s.read("creds") == {"type": "ACCESS_TOKEN", "token": "abc"}
    s.write("creds", {"type": "ACCESS_TOKEN", "token": "def"})
    assert s.read("creds")["token"] == "def"
    assert s.writes == 2


def _corrupt(s, content):
    with open("state/pulses.json", "wb") as f:
        f.write(content)


def test_empty_truncated_and_corrupt_files_read_as_absent_with_a_warning():
    s, log = _store()
    s.write("pulses", {"index": 123456})
    with open("state/pulses.json", "rb") as f:
        good = f.read()
    bad = [b"", good[:5], good[:-1], good[:-3] + b"00\n", good.replace(b"123456", b"123457"),
           b"\xff" * len(good), b"\n\n", b"{}\nzz\n"]
    for content in bad:
        _corrupt(s, content)
        assert s.read("pulses") is None, content
        assert "treated as absent" in log.lines[-1]
    _corrupt(s, good)
    assert s.read("pulses") == {"index": 123456}


def test_power_cut_before_rename_keeps_the_old_record():
    s, log = _store()
    s.write("attrs", {"hash": "old"})
    # What a power cut during the next write leaves: a partial .tmp beside the record.
    with open("state/attrs.tmp", "wb") as f:
        f.write(b'{"hash": "ne')
    assert s.read("attrs") == {"hash": "old"}
    s.write("attrs", {"hash": "new"})  # the stray .tmp is simply replaced
    assert s.read("attrs") == {"hash": "new"}
    assert "attrs.tmp" not in os.listdir("state")


def test_remove():
    s, log = _store()
    s.write("boot", {"n": 1})
    s.remove("boot")
    s.remove("boot")
    assert s.read("boot") is None
