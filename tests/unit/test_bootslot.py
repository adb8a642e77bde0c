"""bootslot.py's decisions on CPython, in a test directory as the flash: which tree boots, the
trial counted before the firmware runs, the rollback after three boots, and the unpacking of a
verified package (tools/ota_package.py's format) into the spare slot, every file checked."""

import binascii
import hashlib
import json
import os
import shutil
import sys
import time

import pytest

import bootslot
from tools import ota_package


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # MicroPython's os.ilistdir (name, type, inode), which CPython's os lacks
    monkeypatch.setattr(os, "ilistdir", lambda p: [(e.name, 0x4000 if e.is_dir() else 0x8000, 0)
                                                   for e in os.scandir(p)], raising=False)
    monkeypatch.setattr(bootslot, "reset", lambda: (_ for _ in ()).throw(SystemExit("reset")))
    # reboot(): MicroPython's sys.print_exception, and no 5 s pause here
    monkeypatch.setattr(sys, "print_exception", lambda e: None, raising=False)
    monkeypatch.setattr(time, "sleep", lambda s: None)


def failed_start(e=ValueError("incompatible .mpy file")):
    """main.py's guard: the firmware could not even start."""
    with pytest.raises(SystemExit):
        bootslot.reboot(e)


def slot_tree(n):
    os.makedirs("ota/%d/firmware" % n, exist_ok=True)
    open("ota/%d/firmware/__init__.mpy" % n, "wb").close()


def test_no_record_or_an_unreadable_one_boots_the_deployed_tree():
    assert bootslot.start(bootslot.read()) == 0
    os.makedirs("state")
    with open("state/bootslot.json", "wb") as f:
        f.write(b'{"run": 1}\n00000000\n')  # CRC wrong
    assert bootslot.read() is None and bootslot.start(None) == 0


def test_a_trial_is_counted_before_the_firmware_runs_and_rolled_back_after_three_boots():
    slot_tree(1)
    bootslot.write({"run": 1, "last": 0, "tries": 0, "version": "2.0", "sum": "s2"})
    for n in (1, 2, 3):
        assert bootslot.start(bootslot.read()) == 1
        assert bootslot.read()["tries"] == n
    assert bootslot.start(bootslot.read()) == 0  # the fourth boot: back by itself
    rec = bootslot.read()
    assert rec["run"] == 0 and rec["stop"] == "s2"
    assert rec["reason"] == "2.0 did not reach the run state with a PUBACK in 3 boots"


def test_the_rollback_names_the_last_error_the_firmware_kept():
    slot_tree(2)
    bootslot.write({"run": 2, "last": 1, "tries": 3, "version": "3.0", "sum": "s3"})
    body = json.dumps({"msg": "connect: refused"}).encode()
    with open("state/lasterr.json", "wb") as f:
        f.write(body + b"\n%08x\n" % (binascii.crc32(body) & 0xFFFFFFFF))
    assert bootslot.start(bootslot.read()) == 1
    assert bootslot.read()["reason"].endswith("(last error: connect: refused)")


def test_a_confirmed_slot_boots_and_a_missing_one_rolls_back():
    slot_tree(1)
    bootslot.write({"run": 1})
    assert bootslot.start(bootslot.read()) == 1
    bootslot.write({"run": 2, "last": 1, "tries": 1, "version": "3.0", "sum": "s3"})
    assert bootslot.start(bootslot.read()) == 1  # slot 2 is not there: back to 1
    assert "slot 2 is missing" in bootslot.read()["reason"]


def test_a_confirmed_slot_that_fails_to_start_three_times_in_a_row_is_given_up(capsys):
    # Its flash corrupted after the update proved itself: main.py's guard calls reboot() at
    # every start; the fourth boot runs the deployed tree, which reports FAILED with the reason
    # and never installs that package again ("stop": its checksum, kept in the slot).
    slot_tree(2)
    with open("ota/2/fw_checksum", "wb") as f:
        f.write(b"ab" * 32)
    bootslot.write({"run": 2, "done": "2.0"})
    for n in (1, 2, 3):
        assert bootslot.start(bootslot.read()) == 2
        failed_start()
        assert bootslot.read()["n"] == n
    capsys.readouterr()
    assert bootslot.start(bootslot.read()) == 0
    why = ("the firmware in slot 2 failed to start 3 times in a row "
           "(ValueError: incompatible .mpy file)")
    assert bootslot.read() == {"run": 0, "reason": why, "stop": "ab" * 32}
    assert capsys.readouterr().out == "bootslot: %s; booting the deployed firmware\n" % why
    assert bootslot.start(bootslot.read()) == 0  # for good


def test_failed_starts_count_only_in_a_row_and_the_deployed_tree_just_resets():
    slot_tree(1)
    bootslot.write({"run": 1})
    failed_start()
    failed_start()
    rec = bootslot.read()
    assert rec["n"] == 2 and rec["why"] == "ValueError: incompatible .mpy file"
    del rec["n"]  # a reading acknowledged again (firmware/remote.py): the count starts over
    bootslot.write(rec)
    failed_start()
    failed_start()
    assert bootslot.start(bootslot.read()) == 1
    # The deployed tree has nothing to fall back to: no count, only the pause and the reset.
    bootslot.write({"run": 0, "stop": "s1"})
    failed_start()
    assert bootslot.read() == {"run": 0, "stop": "s1"}
    # A package whose slot checksum is unreadable is given up all the same.
    bootslot.write({"run": 1, "n": 3, "why": "x"})
    assert bootslot.start(bootslot.read()) == 0 and bootslot.read()["stop"] is None


def _tree(tmp_path, files):
    root = tmp_path / "tree"
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return str(root)


def _stage(data, title="meter-firmware", ver="2.0", run=0):
    os.makedirs("ota", exist_ok=True)
    with open("ota/pkg.bin", "wb") as f:
        f.write(data)
    bootslot.write({"run": run, "new": ver, "name": title,
                    "sum": hashlib.sha256(data).hexdigest(), "size": len(data)})


FILES = {"firmware/__init__.mpy": b"init", "firmware/a.mpy": b"A" * 1000,
         "firmware/hal/esp32.mpy": b"E" * 3000}


def test_a_verified_package_is_unpacked_into_the_spare_slot_and_put_on_trial(tmp_path):
    data = ota_package.pack(_tree(tmp_path, FILES), "meter-firmware", "2.0")
    slot_tree(2)  # the spare slot's old contents go
    with open("ota/2/firmware/stale.mpy", "wb") as f:
        f.write(b"old")
    _stage(data, run=1)
    with pytest.raises(SystemExit):  # then a reset, into a heap in one piece
        bootslot.start(bootslot.read())
    rec = bootslot.read()
    assert rec == {"run": 2, "last": 1, "tries": 0, "version": "2.0",
                   "sum": hashlib.sha256(data).hexdigest()}
    for rel, body in FILES.items():
        with open("ota/2/" + rel, "rb") as f:
            assert f.read() == body
    assert not os.path.exists("ota/2/firmware/stale.mpy")
    assert not os.path.exists("ota/pkg.bin")
    assert bootslot.start(bootslot.read()) == 2 and bootslot.read()["tries"] == 1


@pytest.mark.parametrize("damage,why", [
    (lambda d: d.replace(b"A" * 1000, b"A" * 999 + b"B"), "firmware/a.mpy does not match"),
    (lambda d: b"XOTA1" + d[5:], "not a firmware package"),
])
def test_a_package_whose_files_do_not_match_is_refused_and_the_old_slot_boots(tmp_path, damage, why):
    data = damage(ota_package.pack(_tree(tmp_path, FILES), "meter-firmware", "2.0"))
    _stage(data)
    with pytest.raises(SystemExit):
        bootslot.start(bootslot.read())
    rec = bootslot.read()
    assert rec["run"] == 0 and rec["stop"] == hashlib.sha256(data).hexdigest()
    assert why in rec["reason"]
    assert bootslot.start(bootslot.read()) == 0


def test_a_manifest_naming_a_file_outside_the_slot_is_refused(tmp_path):
    man = json.dumps({"title": "meter-firmware", "version": "2.0",
                      "files": [["firmware/__init__.mpy", 1, "0" * 64],
                                ["firmware/../../main.mpy", 1, "0" * 64]]}).encode()
    data = b"MOTA1 %d\n" % len(man) + man + b"xy"
    _stage(data)
    with pytest.raises(SystemExit):
        bootslot.start(bootslot.read())
    assert "not allowed" in bootslot.read()["reason"]
    assert not os.path.exists("main.mpy") and not os.path.exists("ota/main.mpy")


class PowerCut(BaseException):
    """Not an Exception: nothing in bootslot.py may catch a power cut and carry on."""


class _CutFlash:
    """bootslot.py's open() and os.rename(), with a power cut at the k-th write or rename: the
    write stops half-way (worse than LittleFS, which keeps an unclosed file as it was), the
    rename does not happen."""

    _rename = staticmethod(os.rename)

    def __init__(self, k):
        self.k, self.n = k, 0

    def _event(self):
        self.n += 1
        return self.n == self.k

    def open(self, path, mode="r"):
        f = open(path, mode)
        if "w" not in mode and "+" not in mode:
            return f
        cut = self

        class File:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                if cut._event():
                    f.write(bytes(data[:len(data) // 2]))
                    f.close()
                    raise PowerCut()
                return f.write(data)

        return File()

    def rename(self, a, b):
        if self._event():
            raise PowerCut()
        self._rename(a, b)


@pytest.mark.parametrize("proves,breaks", [(True, False), (False, False), (True, True)])
def test_a_power_cut_at_any_write_never_keeps_the_meter_from_booting_nor_loses_the_verdict(
        tmp_path, monkeypatch, proves, breaks):
    # The whole life of an update at boot (unpacking, the switch, the trial boots, the
    # confirmation or the rollback; with breaks, the confirmed slot failing at every start
    # afterwards until it is given up), cut at each of its writes in turn, then booted until it
    # settles: every boot runs a tree that is there, and the end is the new firmware
    # confirmed, or the old one with the reason to report (FAILED), never neither.
    data = ota_package.pack(_tree(tmp_path, FILES), "meter-firmware", "2.0")
    flash = os.getcwd()
    k, cut_seen = 0, True
    while cut_seen:
        k += 1
        os.chdir(flash)
        for d in ("ota", "state"):
            shutil.rmtree(d, ignore_errors=True)
        _stage(data)
        cut = _CutFlash(k)
        monkeypatch.setattr(bootslot, "open", cut.open, raising=False)
        monkeypatch.setattr(bootslot.os, "rename", cut.rename)
        cut_seen = False
        for boot in range(16):
            try:
                slot = bootslot.start(bootslot.read())
                assert slot in (0, 1, 2)
                if slot:
                    assert os.path.exists("ota/%d/firmware/__init__.mpy" % slot), (k, boot)
                rec = bootslot.read()
                if proves and slot and isinstance(rec.get("tries"), int):
                    bootslot.write({"run": slot, "done": rec["version"]})  # firmware/remote.py
                elif breaks and slot:
                    bootslot.reboot(ValueError("incompatible .mpy file"))  # main.py's guard
            except SystemExit:
                continue  # unpacked (or refused): the reset
            except PowerCut:
                cut_seen = True
        monkeypatch.setattr(bootslot.os, "rename", _CutFlash._rename)
        rec = bootslot.read()
        if breaks:
            assert rec == {"run": 0, "stop": hashlib.sha256(data).hexdigest(), "reason":
                           "the firmware in slot 1 failed to start 3 times in a row "
                           "(ValueError: incompatible .mpy file)"}, (k, rec)
        elif proves:
            assert rec == {"run": 1, "done": "2.0"}, (k, rec)
        else:
            assert rec is not None and rec["run"] == 0 and "reason" in rec, (k, rec)
            assert rec["stop"] == hashlib.sha256(data).hexdigest()
    assert k > 10  # the cuts did reach the unpacking, the switch and the trial boots
