"""The supervisor's session logic against hostile and unlucky cases (issue 11 §4-5, issue 13
bugs 6-7, issue 17 RPC redelivery): working credentials never stranded, no storm whatever the
server answers, crash resets are not the gesture, Wi-Fi calls that raise, the BOOT button
polled after boot, RPCs acted on once."""

import json

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware import telemetry
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
ATTR = "v1/devices/me/attributes"
RPC = "v1/devices/me/rpc/request/"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class _NullLog:
    def warn(self, *a):
        pass


def stored_creds():
    return Store(_NullLog()).read("creds")


def in_run(rig):
    return rig.meter is not None and rig.meter.state == M.RUN


def settled(rig):
    # Running, and up longer than the gesture window: this boot no longer counts.
    assert rig.run(60_000, lambda: in_run(rig))
    rig.run(15_000)


def quick_cycles(rig, n=4, up_ms=3000):
    for _ in range(n):
        rig.cut_power()
        rig.power_up()
        rig.run(up_ms)


def normal_connects(broker):
    return [c for c in broker.connects if c[1] != "provision"]


class IssuesUnusableCredentials(FakeBroker):
    """A broken or hostile server: every provisioning request gets SUCCESS with a fresh token
    that no CONNECT will accept (CONNACK 5)."""

    def decide(self, req):
        if req.get("provisionDeviceKey") != self.key:
            return super().decide(req)
        self.issued += 1
        return {"credentialsValue": "never-valid-%04d-token" % self.issued,
                "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}


def count_writes(monkeypatch, name):
    writes = []
    real = Store.write

    def write(self, rec, obj):
        if rec == name:
            writes.append(obj)
        return real(self, rec, obj)

    monkeypatch.setattr(Store, "write", write)
    return writes


# --- issue 11 §4: re-provisioning never strands a working meter --------------------------------

def test_gesture_failure_then_refused_device_token_reconnects_with_the_working_credentials():
    b = FakeBroker()
    # A configured device token the platform does not know (typo, or another meter's): the
    # first provisioning ignores it and issues its own (SUCCESS); the gesture then gets
    # FAILURE (the name exists), tries the token, and gets CONNACK 5.
    b.provision_script = [{"credentialsValue": "issued-token-0001", "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.add_device(NAME, "issued-token-0001")
    rig = Rig(b, access_token="configured-but-unknown-7")
    settled(rig)
    n_attr = len(b.messages(ATTR))
    quick_cycles(rig)
    t0 = rig.hal.clock.us // 1000
    # At once, not in retry_slow_s (an hour): back to reporting with the working credentials.
    assert rig.run(60_000, lambda: in_run(rig)), rig.text()[-2000:]
    assert rig.hal.clock.us // 1000 - t0 < 60_000
    refused = [c for c in b.connects if c[1] == "configured-but-unknown-7"]
    assert [c[2] for c in refused] == [5]
    assert normal_connects(b)[-1][1:3] == ("issued-token-0001", 0)
    assert stored_creds() == {"type": "ACCESS_TOKEN", "token": "issued-token-0001"}
    assert "reconnecting with the working credentials" in rig.text()
    assert len(b.messages(ATTR)) == n_attr + 1  # the gesture's resend, with the working ones


def test_crash_resets_never_count_toward_the_gesture():
    rig = Rig(FakeBroker())
    settled(rig)
    n_prov = len(rig.broker.provision_requests)
    for _ in range(6):  # a crash loop: firmware/entry.py resets the board 3 s after every boot
        rig.meter = None
        rig.hal.cause = 1  # what FakeHal.reset() leaves for the next boot
        rig.power_up()
        rig.run(3000)
    rig.run(60_000, lambda: in_run(rig))
    assert "re-provisioning requested" not in rig.text()
    assert len(rig.broker.provision_requests) == n_prov
    assert "after a reset" in rig.text()


def test_a_reset_between_power_cycles_breaks_the_gesture():
    rig = Rig(FakeBroker())
    settled(rig)
    n_prov = len(rig.broker.provision_requests)
    quick_cycles(rig, 2)
    rig.meter = None
    rig.hal.cause = 1
    rig.power_up()
    rig.run(3000)
    quick_cycles(rig, 2)  # 2 + reset + 2: not four power-ups in a row
    rig.run(60_000, lambda: in_run(rig))
    assert len(rig.broker.provision_requests) == n_prov


def test_issued_credentials_that_are_refused_fall_back_to_the_working_ones(monkeypatch):
    b = FakeBroker()
    rig = Rig(b)
    settled(rig)
    token = stored_creds()["token"]
    # From now on the server issues credentials it then refuses.
    b.__class__ = IssuesUnusableCredentials
    b.delete_device(NAME)
    b.tokens[token] = NAME  # the working token still works
    writes = count_writes(monkeypatch, "creds")
    quick_cycles(rig)
    assert rig.run(60_000, lambda: in_run(rig)), rig.text()[-2000:]
    assert stored_creds() == {"type": "ACCESS_TOKEN", "token": token}
    assert [c[2] for c in normal_connects(b) if c[1].startswith("never-valid")] == [5]
    assert "reconnecting with the working ones" in rig.text()
    # New ones stored beside the working ones (a power cut then finds both), then the
    # working ones alone again: two writes, and never a round more.
    assert [sorted(w) for w in writes] == [["token", "type", "working"], ["token", "type"]]
    n = len(b.provision_requests)
    rig.run(30 * 60_000)
    assert len(b.provision_requests) == n and in_run(rig)


def test_a_power_cut_between_issued_and_proven_keeps_both(monkeypatch):
    b = FakeBroker()
    rig = Rig(b)
    settled(rig)
    token = stored_creds()["token"]
    b.delete_device(NAME)
    b.tokens[token] = "kept alive"
    quick_cycles(rig, 3)
    rig.cut_power()
    rig.power_up()  # the fourth: the gesture
    # Cut as soon as the issued credentials are on flash, before they were used.
    assert rig.run(60_000, lambda: "working" in (stored_creds() or {}))
    assert stored_creds()["working"] == {"type": "ACCESS_TOKEN", "token": token}
    rig.cut_power()
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    new = stored_creds()
    assert new["token"] != token and "working" not in new  # proven by CONNACK 0, the old ones go
    assert normal_connects(b)[-1][1:3] == (new["token"], 0)


# --- issue 11 §5: no storm, whatever the server answers -----------------------------------------

def test_success_then_connack_5_is_bounded_by_the_backoff(monkeypatch):
    b = IssuesUnusableCredentials()
    writes = count_writes(monkeypatch, "creds")
    rig = Rig(b)  # retry_min_s 2, retry_max_s 60
    rig.run(10 * 60_000)
    normal = normal_connects(b)
    prov = [c for c in b.connects if c[1] == "provision"]
    # 2 s doubling to 60 s, each delay drawn from its upper half: about 17 rounds in 10 min.
    # Before the fix: a round per main-loop step, thousands.
    assert 5 <= len(normal) <= 25, len(normal)
    assert len(prov) == len(normal) and len(writes) == len(normal)
    times = [c[3] for c in normal]
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert min(gaps) >= 1000 and max(gaps) >= 30_000, gaps
    assert all(c[2] == 5 for c in normal)
    assert rig.meter.state in (M.PROVISION, M.CONNECT)


def test_a_provisioning_success_does_not_reset_the_backoff_only_a_puback_does():
    b = IssuesUnusableCredentials()
    rig = Rig(b)
    rig.run(6 * 60_000)
    assert rig.meter._backoff.failures >= 6
    # The platform comes to its senses: the next issued token works, the attributes are
    # acknowledged, and only that resets the backoff.
    b.__class__ = FakeBroker
    assert rig.run(10 * 60_000, lambda: in_run(rig))
    assert rig.meter._backoff.failures == 0


def test_wifi_joins_neither_reset_nor_inflate_the_server_backoff():
    rig = Rig(FakeBroker())
    assert rig.run(60_000, lambda: in_run(rig))
    rig.broker.close_after_connect = 1000  # every session closed right after its CONNACK
    rig.broker.sessions[-1]._raw().peer_closed = True
    rig.run(3 * 60_000)
    failures = rig.meter._backoff.failures
    assert failures >= 4
    # Wi-Fi goes for 5 minutes (joins fail, backing off on their own) and comes back: the
    # server's backoff keeps its count, a join is no PUBACK, and the failed joins add nothing.
    rig.hal.wifi_up = False
    rig.run(5 * 60_000)
    assert rig.hal.wifi_joins >= 4
    rig.hal.wifi_up = True
    assert rig.run(120_000, lambda: rig.meter.state == M.CONNECT)
    assert failures <= rig.meter._backoff.failures <= failures + 2


# --- issue 13 bug 6: Wi-Fi calls that raise -------------------------------------------------------

@pytest.mark.parametrize("error", [OSError("Wifi Internal Error"),
                                   RuntimeError("Wifi Unknown Error 0x3001")])
def test_a_wifi_connect_that_raises_is_a_retry_not_a_crash(error):
    rig = Rig(FakeBroker(), start=False)
    rig.hal.wifi_error = error
    rig.power_up()
    rig.run(20_000)
    assert rig.hal.wifi_joins >= 3
    assert "could not start joining meters (%s)" % error in rig.text()
    rig.hal.wifi_error = None
    assert rig.run(120_000, lambda: in_run(rig))


def test_the_log_says_why_the_join_failed_read_before_disconnect():
    rig = Rig(FakeBroker(), start=False)
    hal = rig.hal
    hal.wifi_up = False
    reason = ["wrong password"]

    def disconnect():
        hal.wifi_joined = False
        reason[0] = "idle"  # as the ESP32 after disconnect(): the reason is gone

    def connect(ssid, password):
        hal.wifi_joins += 1
        hal.wifi_joined = True
        reason[0] = "wrong password"

    hal.wifi_disconnect, hal.wifi_connect = disconnect, connect
    hal.wifi_status = lambda: reason[0]
    rig.power_up()
    rig.run(40_000)
    assert "could not join meters (wrong password)" in rig.text()
    assert "(idle)" not in rig.text()


# --- the BOOT button ---------------------------------------------------------------------------------

@pytest.mark.parametrize("press_at_ms", [5_000, 35_000, 600_000])
def test_boot_button_held_3_s_after_boot_requests_reprovisioning_on_release(press_at_ms):
    # Released while power came on (GPIO0 low at reset starts the ROM loader), pressed later:
    # at any time after boot, judged on release (held on to 10 s it would be setup mode:
    # firmware/setup_request.py).
    rig = Rig(FakeBroker())
    settled(rig)
    n = len(rig.broker.provision_requests)
    rig.cut_power()
    rig.power_up()
    rig.run(press_at_ms)
    rig.hal.button = True
    rig.run(3_500)
    assert "re-provisioning requested (BOOT button)" not in rig.text()  # not while held
    rig.hal.button = False
    rig.run(200)
    assert "re-provisioning requested (BOOT button)" in rig.text()
    assert rig.run(60_000, lambda: in_run(rig) and len(rig.broker.provision_requests) == n + 1)


@pytest.mark.parametrize("press_at_ms, hold_ms", [(1_000, 1_500), (35_000, 2_500)])
def test_a_short_press_does_nothing(press_at_ms, hold_ms):
    rig = Rig(FakeBroker())
    settled(rig)
    n = len(rig.broker.provision_requests)
    rig.cut_power()
    rig.power_up()
    rig.run(press_at_ms)
    rig.hal.button = True
    rig.run(hold_ms)
    rig.hal.button = False
    rig.run(60_000)
    assert "BOOT button" not in rig.text() and len(rig.broker.provision_requests) == n


# --- issue 17: RPCs acted on once --------------------------------------------------------------------

def running_rig(**over):
    rig = Rig(FakeBroker(), **over)
    assert rig.run(60_000, lambda: in_run(rig))
    return rig


def send(rig, topic, payload):
    rig.broker.sessions[-1].pending.append((topic.encode(), payload))
    rig.run(200)


def replies(rig, rid):
    return [json.loads(p) for (_c, _u, t, p, _q) in rig.broker.published
            if t == "v1/devices/me/rpc/response/%s" % rid]


def reboot_and_come_back(rig):
    # FakeHal.reset() raised SystemExit; the chip resets and the firmware boots again.
    rig.link.close(graceful=False)
    rig.meter = None
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))


def test_a_reboot_resent_after_the_reset_is_answered_not_acted_on_again():
    rig = running_rig()
    with pytest.raises(SystemExit):
        send(rig, RPC + "5", b'{"method":"reboot"}')
    assert rig.hal.resets == 1
    reboot_and_come_back(rig)
    # ThingsBoard (BURST) sends the unanswered RPC again, same id, to the new session.
    send(rig, RPC + "5", b'{"method":"reboot"}')
    assert rig.hal.resets == 1
    assert replies(rig, "5") == [{"result": "rebooting"}, {"result": "already done"}]
    assert "RPC 5: reboot already done" in rig.text()


def test_after_the_window_the_same_id_is_a_new_request():
    # Request ids start again at 0 when ThingsBoard restarts: the record is only honoured in
    # the first minute of the session after the action, then removed.
    rig = running_rig()
    with pytest.raises(SystemExit):
        send(rig, RPC + "0", b'{"method":"reboot"}')
    reboot_and_come_back(rig)
    rig.run(61_000)
    assert Store(_NullLog()).read("rpc") is None
    with pytest.raises(SystemExit):
        send(rig, RPC + "0", b'{"method":"reboot"}')
    assert rig.hal.resets == 2


def test_the_record_is_retired_after_the_window_even_without_a_resend():
    rig = running_rig()
    with pytest.raises(SystemExit):
        send(rig, RPC + "3", b'{"method":"reboot"}')
    assert Store(_NullLog()).read("rpc") == {"rid": "3", "method": "reboot"}  # before the reset
    reboot_and_come_back(rig)
    rig.run(61_000)
    assert Store(_NullLog()).read("rpc") is None


def test_a_reprovision_resent_to_the_next_session_is_not_served_twice():
    rig = running_rig()
    send(rig, RPC + "6", b'{"method":"reprovision"}')
    assert rig.run(60_000, lambda: in_run(rig) and len(rig.broker.provision_requests) == 2)
    n_attr = len(rig.broker.messages(ATTR))
    send(rig, RPC + "6", b'{"method":"reprovision"}')
    rig.run(30_000)
    assert len(rig.broker.provision_requests) == 2 and in_run(rig)
    assert len(rig.broker.messages(ATTR)) == n_attr
    assert replies(rig, "6") == [{"result": "reprovisioning"}, {"result": "already done"}]


def test_two_copies_in_one_burst_are_served_once():
    rig = running_rig()
    s = rig.broker.sessions[-1]
    s.pending.append(((RPC + "7").encode(), b'{"method":"reprovision"}'))
    s.pending.append(((RPC + "7").encode(), b'{"method":"reprovision"}'))
    rig.run(200)
    assert rig.run(60_000, lambda: in_run(rig) and len(rig.broker.provision_requests) == 2)
    rig.run(30_000)
    assert len(rig.broker.provision_requests) == 2


def test_a_different_id_or_method_is_a_new_request():
    rig = running_rig()
    send(rig, RPC + "8", b'{"method":"reprovision"}')
    assert rig.run(60_000, lambda: in_run(rig) and len(rig.broker.provision_requests) == 2)
    send(rig, RPC + "9", b'{"method":"reprovision"}')
    assert rig.run(60_000, lambda: in_run(rig) and len(rig.broker.provision_requests) == 3)
    with pytest.raises(SystemExit):
        send(rig, RPC + "9", b'{"method":"reboot"}')


def test_a_corrupt_record_is_ignored():
    rig = running_rig()
    Store(_NullLog()).write("rpc", {"rid": 5, "method": "format"})
    rig.cut_power()
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    with pytest.raises(SystemExit):
        send(rig, RPC + "5", b'{"method":"reboot"}')


# --- issue 13 risks: the IDF heap in the health message --------------------------------------------

def test_health_reports_the_idf_heap_where_the_board_has_one():
    rig = Rig(FakeBroker(), start=False, health_interval_s=60)
    rig.hal.idf = (91234, 40960)
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    rig.run(70_000)
    health = [m for m in rig.broker.messages("v1/devices/me/telemetry")
              if "uptime_s" in m.get("values", m)]
    assert health
    values = health[-1].get("values", health[-1])
    assert values["idf_free"] == 91234 and values["idf_largest"] == 40960
    assert b'"idf_free"' not in telemetry.health(0, 1, None, 2, 0, 0)
