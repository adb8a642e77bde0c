"""firmware/ota.py on CPython with the fake broker answering as ThingsBoard does: the fw_*
shared attributes at connect, chunks on v2/fw/response/<id>/chunk/<n> (docs/thingsboard.md
§14.5), fw_state as telemetry. The unpacking at boot is bootslot.py's (tests/unit/test_bootslot.py)."""

import hashlib
import json
import os
import re
import struct
import sys
import binascii

import pytest
from fakes import FakeBroker
from harness import Rig

from firmware import version

CHUNK = 512  # firmware/ota.py _CHUNK
REQ = re.compile(r"v2/fw/request/(\d+)/chunk/(\d+)$")


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class OtaBroker(FakeBroker):
    """Announces one package in the attribute reply and serves its chunks."""

    def __init__(self, data, algorithm="SHA256", checksum=None, served=None, **kw):
        super().__init__(**kw)
        self.data = data
        self.served = data if served is None else served  # what the chunks carry
        if checksum is None:
            checksum = hashlib.sha256(data).hexdigest() if algorithm == "SHA256" else \
                struct.pack("<I", binascii.crc32(data) & 0xFFFFFFFF).hex()
        self.fw = {"fw_title": version.TITLE, "fw_version": "2.0", "fw_size": len(data),
                   "fw_checksum": checksum, "fw_checksum_algorithm": algorithm}
        self.chunk_requests = []  # (request id, chunk)

    def on_publish(self, session, topic, msg, qos):
        action = super().on_publish(session, topic, msg, qos)
        t = topic.decode()
        if t.startswith("v1/devices/me/attributes/request/"):
            session.pending.append((b"v1/devices/me/attributes/response/1",
                                    json.dumps({"shared": self.fw}).encode()))
        m = REQ.match(t)
        if m:
            rid, n = int(m.group(1)), int(m.group(2))
            size = int(msg)
            self.chunk_requests.append((rid, n))
            session.pending.append((("v2/fw/response/%d/chunk/%d" % (rid, n)).encode(),
                                    self.served[n * size:(n + 1) * size]))
        return action

    def fw_states(self):
        return [(m.get("fw_state"), m.get("fw_error"))
                for m in self.messages("v1/devices/me/telemetry")
                if isinstance(m, dict) and "fw_state" in m]


def record(name):
    with open("state/%s.json" % name, "rb") as f:
        body = f.read().rsplit(b"\n", 2)[0]
    return json.loads(body)


def package(n=3000):
    return bytes((i * 7) % 251 for i in range(n))


def run_until_reset(rig, ms=120000):
    with pytest.raises(SystemExit):
        rig.run(ms)
    return rig


def test_a_package_is_downloaded_checked_and_handed_to_the_boot():
    data = package()
    rig = Rig(broker=OtaBroker(data))
    run_until_reset(rig)
    with open("ota/pkg.bin", "rb") as f:
        assert f.read() == data
    assert record("bootslot") == {"run": 0, "new": "2.0", "name": version.TITLE,
                                  "sum": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert [s for s, _e in rig.broker.fw_states()] == ["DOWNLOADING", "DOWNLOADED", "VERIFIED",
                                                      "UPDATING"]
    # Chunk by chunk, in order, one request id for the session.
    assert [n for _r, n in rig.broker.chunk_requests] == list(range(-(-len(data) // CHUNK)))
    assert len({r for r, _n in rig.broker.chunk_requests}) == 1
    assert rig.hal.resets == 1


class _ErrorOnce(OtaBroker):
    """Answers the request for chunk 2 once on v2/fw/error instead of with the chunk, as
    ThingsBoard does when it cannot serve one (docs/thingsboard.md §14.5)."""

    def __init__(self, data):
        super().__init__(data)
        self.erred = False

    def on_publish(self, session, topic, msg, qos):
        m = REQ.match(topic.decode())
        if m and int(m.group(2)) == 2 and not self.erred:
            self.erred = True
            self.chunk_requests.append((int(m.group(1)), 2))
            action = FakeBroker.on_publish(self, session, topic, msg, qos)
            session.pending.append((b"v2/fw/error", b"Failed to send chunk: \x00\n2"))
            return action
        return super().on_publish(session, topic, msg, qos)


def test_an_error_from_the_server_mid_download_is_logged_and_the_chunk_asked_for_again():
    data = package(4000)
    rig = Rig(broker=_ErrorOnce(data))
    run_until_reset(rig)
    assert rig.broker.erred
    # One line, the server's text escaped (it is the server's: hostile until checked).
    assert rig.text().count("ota: the server refused the download: b'Failed to send chunk: "
                            "\\x00\\n2'") == 1, rig.text()[-2000:]
    with open("ota/pkg.bin", "rb") as f:
        assert f.read() == data  # the rest came, chunk 2 too, and nothing twice
    assert [n for _r, n in rig.broker.chunk_requests].count(2) == 2
    assert [s for s, _e in rig.broker.fw_states()] == ["DOWNLOADING", "DOWNLOADED", "VERIFIED",
                                                      "UPDATING"]
    assert "unexpected" not in rig.text() and rig.hal.resets == 1


def test_the_first_chunk_is_asked_for_at_once_whatever_the_ticks_read():
    # The fake ticks start 30 s before they wrap, as the e2e suite's do (METER_TICKS_WRAP_MS):
    # a next-request time of 0 read as "in the future" until the wrap, so a session shorter
    # than that never asked for a chunk, and a dropped session looked like one to restart.
    rig = Rig(broker=OtaBroker(package()))
    rig.run(5000, until=lambda: rig.broker.chunk_requests)
    assert rig.broker.chunk_requests, rig.text()[-2000:]


def test_crc32_is_checked_as_thingsboard_writes_it():
    data = package(1500)
    rig = Rig(broker=OtaBroker(data, algorithm="CRC32"))
    run_until_reset(rig)
    assert record("bootslot")["new"] == "2.0"


def test_a_wrong_checksum_fails_and_the_package_is_never_tried_again():
    data = package()
    served = data[:100] + b"X" + data[101:]
    rig = Rig(broker=OtaBroker(data, served=served))
    rig.run(60000)
    assert rig.broker.fw_states()[-1] == ("FAILED", "SHA256 of the download does not match "
                                                    "fw_checksum")
    assert not os.path.exists("ota/pkg.bin")
    assert record("bootslot")["stop"] == rig.broker.fw["fw_checksum"]
    n = len(rig.broker.chunk_requests)
    rig.cut_power()
    rig.power_up()
    rig.run(30000)
    assert len(rig.broker.chunk_requests) == n and "not tried again" in rig.text()
    assert rig.hal.resets == 0


@pytest.mark.parametrize("change,error", [
    ({"fw_checksum_algorithm": "MD5"}, "fw_checksum_algorithm 'MD5' cannot be checked here"),
    ({"fw_title": "other-fw"}, "fw_title 'other-fw' is not this firmware"),
    ({"fw_size": 10 ** 9}, "fw_size 1000000000 is not 1..1048576 bytes"),
    ({"fw_size": True}, "fw_size True is not"),
    ({"fw_checksum": "abc"}, "fw_checksum is not a SHA256"),
])
def test_an_announcement_the_meter_cannot_take_is_refused_with_failed(change, error):
    broker = OtaBroker(package())
    broker.fw.update(change)
    rig = Rig(broker=broker)
    rig.run(20000)
    (state, why), = broker.fw_states()
    assert state == "FAILED" and why.startswith(error), why
    assert not broker.chunk_requests


def test_a_package_larger_than_the_free_flash_is_refused(monkeypatch):
    broker = OtaBroker(package())
    broker.fw["fw_size"] = 900 * 1024
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result(
        (4096, 4096, 512, 200, 200) + tuple(real(p))[5:]))  # 800 KB free
    rig = Rig(broker=broker)
    rig.run(20000)
    (state, why), = broker.fw_states()
    assert state == "FAILED" and why.startswith("package of 921600 bytes too large"), why
    assert not broker.chunk_requests


def test_a_power_cut_mid_download_resumes_after_the_last_chunk_written():
    data = package(6000)
    broker = OtaBroker(data)
    rig = Rig(broker=broker)
    rig.run(60000, until=lambda: os.path.exists("ota/pkg.bin") and
            os.path.getsize("ota/pkg.bin") >= 4 * CHUNK)
    have = os.path.getsize("ota/pkg.bin")
    assert have % CHUNK == 0
    rig.cut_power()
    before = len(broker.chunk_requests)
    rig.power_up()
    run_until_reset(rig)
    after = [n for _r, n in broker.chunk_requests[before:]]
    assert after[0] == have // CHUNK  # not from the start
    assert "resuming firmware 2.0 at byte %d" % have in rig.text()
    with open("ota/pkg.bin", "rb") as f:
        assert f.read() == data
    assert record("bootslot")["new"] == "2.0"


def test_readings_go_first_chunks_wait_for_an_empty_queue():
    data = package(8000)
    broker = OtaBroker(data)
    rig = Rig(broker=broker, publish_interval_s=2)
    run_until_reset(rig)
    telemetry = [json.loads(p) for (_c, _u, t, p, _q) in broker.published
                 if t == "v1/devices/me/telemetry"]
    readings = [m for m in telemetry if "pulses" in json.dumps(m)]
    assert len(readings) >= 2  # kept flowing while ~16 chunks came


def _write_record(name, obj):
    os.makedirs("state", exist_ok=True)
    body = json.dumps(obj).encode()
    with open("state/%s.json" % name, "wb") as f:
        f.write(body + b"\n%08x\n" % (binascii.crc32(body) & 0xFFFFFFFF))


def test_a_reading_acknowledged_clears_the_count_of_failed_starts():
    # bootslot.py counts a confirmed slot's failed starts ("n") and gives the slot up after a
    # few in a row: a start that gets a reading acknowledged ends the row (firmware/remote.py).
    _write_record("bootslot", {"run": 1, "n": 2, "why": "ValueError: incompatible .mpy file"})
    rig = Rig(broker=FakeBroker())
    assert rig.run(60000, until=lambda: record("bootslot") == {"run": 1}), record("bootslot")
    assert not rig.hal.resets


def test_no_room_to_start_or_resume_a_download_is_not_a_crash(monkeypatch):
    # Resuming reads the package on flash back (firmware/ota.py): right after a connect, on a
    # heap in pieces, that can raise MemoryError (the e2e power cuts, 4 to 7 % of resumes). As for
    # no room to import it: one warning, metering goes on, the next session resumes.
    from firmware import ota
    real = ota.Ota.update
    calls = []

    def update(self, attrs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        return real(self, attrs)

    monkeypatch.setattr(ota.Ota, "update", update)
    rig = Rig(broker=OtaBroker(package()))
    rig.run(20000)
    assert "no room for the firmware update now" in rig.text()
    assert not rig.hal.resets and "unexpected" not in rig.text()


class _Short:
    """MemoryError injected where the heap runs out on the meter (tests/e2e CI: "allocating 304
    bytes", the LittleFS file object of a chunk's append): the first `times` calls matching
    `when` raise it, the others go through to `real`."""

    def __init__(self, real, when, times):
        self.real, self.when, self.left, self.raised = real, when, times, 0

    def __call__(self, *a, **kw):
        if self.left and self.when(*a, **kw):
            self.left -= 1
            self.raised += 1
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        return self.real(*a, **kw)


def _short_appends(monkeypatch, times):
    import builtins
    short = _Short(builtins.open, lambda path, mode="r", *a, **kw: path == "ota/pkg.bin" and
                   mode == "r+b", times)
    monkeypatch.setattr(builtins, "open", short)
    return short


def test_no_room_for_a_chunk_pauses_the_download_and_it_resumes_from_flash(monkeypatch):
    # The heap runs out on the 3rd chunk's append, twice: no reset, one line each time, a
    # pause, then the download resumes from flash (rehashed) and the package is handed over.
    data = package(4000)
    broker = OtaBroker(data)
    rig = Rig(broker=broker, publish_interval_s=2)
    rig.run(60000, until=lambda: os.path.exists("ota/pkg.bin") and
            os.path.getsize("ota/pkg.bin") >= 2 * CHUNK)
    short = _short_appends(monkeypatch, 2)
    run_until_reset(rig, 180000)
    assert short.raised == 2
    assert rig.text().count("no room in the heap for the download; resuming "
                            "from flash in 10 s") == 2, rig.text()[-3000:]
    assert "resuming firmware 2.0 at byte %d" % (2 * CHUNK) in rig.text()
    assert "Traceback" not in rig.text() and rig.hal.resets == 1  # the hand-over's reset only
    with open("ota/pkg.bin", "rb") as f:
        assert f.read() == data
    assert record("bootslot")["new"] == "2.0"
    # fw_state never FAILED for a short heap; the pause ended the chunk, not the readings.
    states = [s for s, _e in broker.fw_states()]
    assert "FAILED" not in states and states[-2:] == ["VERIFIED", "UPDATING"], states
    n = [n for _r, n in broker.chunk_requests]
    assert n == sorted(n) and n.count(2) == 3  # asked again after each pause, never skipped


def test_no_room_at_the_start_of_a_download_gives_the_heap_back_until_the_next_session(
        monkeypatch):
    # At the start the heap has no room for a download at all (here the SHA-256 object): no
    # reset, and no module kept waiting in a heap that short (at 113K on the Unix port that
    # squeezed the boot gesture's write into a MemoryError): unloaded at once, and the next
    # session's announcement starts it.
    import hashlib as hl
    data = package(2000)
    broker = OtaBroker(data)  # its checksum computed before sha256 is made to fail
    short = _Short(hl.sha256, lambda *a: True, 1)
    monkeypatch.setattr(hl, "sha256", short)  # firmware/ota.py takes it when loaded:
    monkeypatch.delitem(sys.modules, "firmware.ota_check", raising=False)  # loaded afresh
    rig = Rig(broker=broker)
    rig.run(30000, until=lambda: short.raised and "firmware.ota" not in sys.modules)
    assert "no room in the heap for the download; it resumes in the next session" in rig.text()
    assert "resuming from flash in" not in rig.text()
    rig.run(10000)
    assert not broker.chunk_requests and rig.hal.resets == 0
    rig.link.close(graceful=False)  # the next session
    run_until_reset(rig, 120000)
    assert short.raised == 1 and record("bootslot")["new"] == "2.0"
    assert rig.hal.resets == 1


def test_no_room_again_and_again_gives_the_heap_back_to_metering_for_the_session(monkeypatch):
    data = package(4000)
    broker = OtaBroker(data)
    rig = Rig(broker=broker, publish_interval_s=2)
    short = _short_appends(monkeypatch, 1000)
    rig.run(120000)
    assert short.raised == 3  # _ASKS pauses, then the session is left alone
    assert "no room in the heap for the download; it resumes in the next session" in rig.text()
    assert "firmware.ota" not in sys.modules  # unloaded: its heap back
    assert rig.meter.pipeline.published >= 20 and rig.hal.resets == 0
    assert "FAILED" not in [s for s, _e in broker.fw_states()]
    # The heap is back: the next session resumes the download from flash.
    short.left = 0
    rig.link.close(graceful=False)
    run_until_reset(rig, 180000)
    with open("ota/pkg.bin", "rb") as f:
        assert f.read() == data
