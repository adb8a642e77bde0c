"""The boot state machine against a scripted ThingsBoard: every state transition and reply."""

import json
import os

import pytest

from fakes import FakeBroker
from harness import BASE, CUPS, Rig
from firmware import states as M
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
SECRETS = ("wifi-pass-1234", "prov-secret-xyz789", "prov-key-abc123", "supplier-secret-0001")
ATTR = "v1/devices/me/attributes"
TELE = "v1/devices/me/telemetry"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Store writes state/ here: this test's flash


def in_run(rig):
    return rig.meter.state == M.RUN


def stored_creds():
    return Store(_NullLog()).read("creds")


class _NullLog:
    def warn(self, *a):
        pass


def assert_no_secret_in_logs(rig, extra=()):
    text = rig.text()
    for s in SECRETS + tuple(extra):
        assert s not in text, s


def provisioned(token="tok-AAAA-1111"):
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": token, "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.tokens[token] = NAME
    return b


# --- first boot, reboot -----------------------------------------------------------------------

def test_first_boot_provisions_sends_attributes_once_then_telemetry():
    rig = Rig(provisioned())
    assert rig.run(60_000, lambda: in_run(rig))
    b = rig.broker
    assert b.provision_requests == [{"provisionDeviceKey": "prov-key-abc123",
                                     "provisionDeviceSecret": "prov-secret-xyz789",
                                     "deviceName": NAME}]
    prov = [c for c in b.connects if c[0] == "provision"]
    assert prov and prov[0][1] == "provision"  # client id and username "provision"
    assert b.messages(ATTR) == [{"Power_suppier_secret_key": "supplier-secret-0001", "CUPs": CUPS}]
    assert stored_creds() == {"type": "ACCESS_TOKEN", "token": "tok-AAAA-1111"}
    rig.pulse(5)
    rig.run(130_000)
    tele = [m for m in b.messages(TELE) if "values" in m and "pulses" in m["values"]]
    assert tele and tele[-1]["values"] == {"energy_kwh": 0.005, "power_w": tele[-1]["values"]["power_w"],
                                           "pulses": 5}
    assert all(isinstance(m["ts"], int) and m["ts"] > 1_700_000_000_000 for m in tele)
    assert_no_secret_in_logs(rig, ["tok-AAAA-1111"])


def test_reboot_reuses_the_token_and_sends_nothing_again():
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.cut_power()
    n_prov, n_attr = len(rig.broker.provision_requests), len(rig.broker.messages(ATTR))
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert len(rig.broker.provision_requests) == n_prov
    assert len(rig.broker.messages(ATTR)) == n_attr
    assert rig.broker.connects[-1][:3] == (NAME, "tok-AAAA-1111", 0)


def test_normal_sessions_never_use_client_id_provision():
    rig = Rig(FakeBroker())
    rig.run(120_000)
    normal = [c for c in rig.broker.connects if c[1] != "provision"]
    assert normal and all(c[0] != "provision" for c in normal)


def test_mqtt_basic_credentials_are_stored_and_used():
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": {"clientId": "cid-9", "userName": "user-9",
                                                "password": "pw-secret-9"},
                           "credentialsType": "MQTT_BASIC", "status": "SUCCESS"}]
    b.basic[("cid-9", "user-9", "pw-secret-9")] = NAME
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig))
    assert stored_creds()["type"] == "MQTT_BASIC"
    assert b.connects[-1][:3] == ("cid-9", "user-9", 0)
    assert_no_secret_in_logs(rig, ["pw-secret-9"])


# --- provisioning replies ------------------------------------------------------------------------

@pytest.mark.parametrize("suback", ["grant", "refuse", "ignore"])
def test_reply_is_accepted_whatever_happens_to_the_subscribe(suback):
    b = provisioned()
    b.provision_suback = suback
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig))
    assert stored_creds()["token"] == "tok-AAAA-1111"


def test_not_found_is_reported_and_retried_only_rarely():
    b = FakeBroker(secret="another-secret")
    rig = Rig(b)
    rig.run(4 * 3600_000)  # four hours
    assert 2 <= len(b.provision_requests) <= 4  # once, then about hourly (retry_slow_s 3600)
    assert "NOT_FOUND" in rig.text() and "provision_secret" in rig.text()
    gaps = [b2 - b1 for b1, b2 in zip(*[[c[3] for c in b.connects if c[0] == "provision"]] * 2)]
    times = [c[3] for c in b.connects if c[0] == "provision"]
    assert all(t2 - t1 >= 1800_000 for t1, t2 in zip(times, times[1:]))
    assert stored_creds() is None and rig.meter.state == M.PROVISION
    assert rig.meter._led.name == "waiting"


def test_failure_without_device_token_waits_slowly_keeping_nothing_it_does_not_have():
    b = FakeBroker()
    b.add_device(NAME, "someone-elses-token")
    rig = Rig(b)
    rig.run(2 * 3600_000)
    assert len(b.provision_requests) <= 3
    assert "FAILURE" in rig.text() and NAME in rig.text()
    assert stored_creds() is None


def test_failure_then_device_supplied_token_connects_and_is_stored():
    b = FakeBroker()
    b.add_device(NAME, "my-own-device-token-123")  # provisioned before, token lost with the flash
    rig = Rig(b, access_token="my-own-device-token-123")
    assert rig.run(60_000, lambda: in_run(rig))
    assert b.provision_requests[0]["token"] == "my-own-device-token-123"
    assert b.provision_requests[0]["credentialsType"] == "ACCESS_TOKEN"
    assert stored_creds() == {"type": "ACCESS_TOKEN", "token": "my-own-device-token-123"}
    assert len(b.messages(ATTR)) == 1
    assert_no_secret_in_logs(rig, ["my-own-device-token-123"])


def test_failure_then_refused_device_token_waits_slowly():
    b = FakeBroker()
    b.add_device(NAME, "other-token-000")
    b.tokens["taken-elsewhere-77"] = "another meter"  # FAILURE: token taken
    rig = Rig(b, access_token="my-token-not-this-one")
    rig.run(10 * 60_000)
    tries = [c for c in b.connects if c[1] == "my-token-not-this-one"]
    assert len(tries) == 1 and tries[0][2] == 5
    assert stored_creds() is None and len(b.provision_requests) == 1


@pytest.mark.parametrize("reply", [None, "close", b"garbage", {"status": "UNKNOWN"}])
def test_no_usable_reply_retries_with_backoff(reply):
    b = provisioned()
    b.provision_script.insert(0, reply)
    rig = Rig(b)
    assert rig.run(120_000, lambda: in_run(rig))
    assert len(b.provision_requests) == 2
    t = [c[3] for c in b.connects if c[0] == "provision"]
    assert t[1] - t[0] >= 1000  # retry_min_s 2: first delay in [1, 2] s


def test_server_down_at_boot_backs_off_then_recovers():
    b = provisioned()
    b.down = True
    rig = Rig(b)
    rig.run(10 * 60_000)
    attempts = b.refused_ms
    assert 5 <= len(attempts) <= 20  # 2 s doubling to 60 s: not a hammer
    gaps = [y - x for x, y in zip(attempts, attempts[1:])]
    assert all(g >= 1000 for g in gaps) and max(gaps) <= 60_000 + 500
    b.down = False
    assert rig.run(120_000, lambda: in_run(rig))


# --- rejected credentials -------------------------------------------------------------------------

def test_connack_5_re_provisions_and_resends_the_attributes():
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: in_run(rig))
    first = stored_creds()["token"]
    b.delete_device(NAME)  # the administrator deletes the device
    rig.cut_power()
    rig.power_up()
    assert rig.run(120_000, lambda: in_run(rig) and stored_creds()["token"] != first)
    assert [c[2] for c in b.connects if c[1] == first][-1] == 5
    attr_senders = [u for (_c, u, t, _p, _q) in b.published if t == ATTR]
    assert attr_senders == [first, stored_creds()["token"]]  # once per device incarnation
    assert "credentials refused (CONNACK 5)" in rig.text()


def test_connack_5_and_failure_retry_both_slowly_and_keep_the_old_credentials():
    b = FakeBroker()
    rig = Rig(b)
    rig.run(60_000, lambda: in_run(rig))
    token = stored_creds()["token"]
    del b.tokens[token]  # credentials changed by the admin: token refused, name still exists
    rig.cut_power()
    rig.power_up()
    rig.run(3 * 3600_000)
    assert stored_creds()["token"] == token  # never destroyed before a replacement works
    refused = [c for c in b.connects if c[1] == token and c[2] == 5]
    assert 2 <= len(refused) <= 5  # retried at the slow pace, about hourly
    b.tokens[token] = NAME  # the administrator restores it
    assert rig.run(3 * 3600_000, lambda: in_run(rig))


@pytest.mark.parametrize("failure", [3, OSError(110, "timeout"), OSError(-2, "DNS")])
def test_transient_failures_never_re_provision(failure):
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.cut_power()
    rig.broker.connect_script = [failure, failure]
    if isinstance(failure, OSError) and failure.args[0] == -2:
        rig.broker.connect_script = []
        rig.hal.socket.dns_ok = False
    rig.power_up()
    rig.run(30_000)
    rig.hal.socket.dns_ok = True
    assert rig.run(120_000, lambda: in_run(rig))
    assert len(rig.broker.provision_requests) == 1


# --- attributes -----------------------------------------------------------------------------------

def test_attributes_marker_only_after_puback_and_resent_after_a_power_cut():
    b = provisioned()
    b.puback[ATTR] = "drop"
    rig = Rig(b)
    rig.run(20_000)
    assert not os.path.exists("state/attrs.json")
    assert len(b.messages(ATTR)) >= 2  # no PUBACK: reconnect and send again
    rig.cut_power()
    b.puback.pop(ATTR)
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert os.path.exists("state/attrs.json")
    n = len(b.messages(ATTR))
    rig.cut_power()
    rig.power_up()
    rig.run(60_000, lambda: in_run(rig))
    assert len(b.messages(ATTR)) == n  # acknowledged: never again


def test_attributes_resent_when_the_config_values_change():
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.cut_power()
    new_cups = CUPS[:20]  # same supply point without the optional 2 characters
    rig.power_up(cups=new_cups)
    assert rig.run(60_000, lambda: in_run(rig))
    assert rig.broker.messages(ATTR)[-1]["CUPs"] == new_cups and len(rig.broker.messages(ATTR)) == 2


def test_custom_attribute_key_names():
    rig = Rig(provisioned(), attr_supplier_key="supplierKey", attr_cups_key="cups")
    rig.run(60_000, lambda: in_run(rig))
    assert rig.broker.messages(ATTR) == [{"supplierKey": "supplier-secret-0001", "cups": CUPS}]


# --- the gesture --------------------------------------------------------------------------------------

def settled(rig):
    # Running, and up longer than the gesture window: this boot no longer counts.
    assert rig.run(60_000, lambda: in_run(rig))
    rig.run(15_000)


def quick_cycles(rig, n=4, up_ms=3000):
    for _ in range(n):
        rig.cut_power()
        rig.power_up()
        rig.run(up_ms)


def test_gesture_with_failure_keeps_the_working_credentials_and_resends_attributes():
    b = FakeBroker()
    rig = Rig(b)
    settled(rig)
    token = stored_creds()["token"]
    n_attr = len(b.messages(ATTR))
    quick_cycles(rig)
    assert rig.run(60_000, lambda: in_run(rig))
    assert len(b.provision_requests) == 2
    assert stored_creds()["token"] == token
    assert len(b.messages(ATTR)) == n_attr + 1
    assert "keeping the working credentials" in rig.text()
    rig.cut_power()
    rig.power_up()
    rig.run(60_000, lambda: in_run(rig))
    assert len(b.provision_requests) == 2  # served: not again


def test_gesture_where_the_platform_allows_it_gets_new_credentials():
    b = FakeBroker()
    rig = Rig(b)
    settled(rig)
    token = stored_creds()["token"]
    b.delete_device(NAME)
    b.tokens[token] = "kept alive"  # old token still valid until the new one works
    quick_cycles(rig)
    assert rig.run(60_000, lambda: in_run(rig))
    assert stored_creds()["token"] != token
    assert b.connects[-1][1] == stored_creds()["token"]


def test_slow_power_cycles_do_not_trigger_the_gesture():
    rig = Rig(provisioned())
    settled(rig)
    for _ in range(6):
        rig.cut_power()
        rig.power_up()
        rig.run(15_000)
    assert len(rig.broker.provision_requests) == 1


def test_gesture_when_the_server_does_not_answer_falls_back_to_the_old_credentials():
    b = FakeBroker()
    rig = Rig(b)
    settled(rig)
    quick_cycles(rig, 3)
    b.provision_script = [None, None, None, None]
    rig.cut_power()
    rig.power_up()
    assert rig.run(5 * 60_000, lambda: in_run(rig))
    assert "giving up the requested re-provisioning" in rig.text()


# --- power cuts between flash writes ------------------------------------------------------------------

class PowerCut(Exception):
    pass


def test_a_power_cut_between_any_two_flash_writes_converges(monkeypatch):
    """First boot (with a device-supplied token, as the README recommends) cut at every flash
    write, before and after its rename; each time the meter is powered up again."""
    real_write = Store.write
    cuts = []
    for k in range(1, 8):
        for after in (False, True):
            for f in ("state/creds.json", "state/attrs.json", "state/pulses.json",
                      "state/boot.json"):
                if os.path.exists(f):
                    os.remove(f)
            b = FakeBroker()
            count = [0]

            def write(self, name, obj, _k=k, _after=after):
                count[0] += 1
                if count[0] == _k and not _after:
                    raise PowerCut(name)
                ok = real_write(self, name, obj)
                if count[0] == _k:
                    raise PowerCut(name)
                return ok

            monkeypatch.setattr(Store, "write", write)
            rig = Rig(b, start=False, access_token="device-token-0001", reprovision_cycles=0)
            try:
                rig.power_up()
                rig.pulse(3)
                rig.run(180_000)
            except PowerCut as e:
                cuts.append((k, after, str(e)))
            monkeypatch.setattr(Store, "write", real_write)
            rig.cut_power()
            rig.power_up()
            assert rig.run(180_000, lambda: in_run(rig)), (k, after, rig.text())
            assert list(b.devices) == [NAME]
            assert 1 <= len(b.attributes.get(NAME, []))
            attr_after_marker = len(b.attributes[NAME])
            rig.cut_power()
            rig.power_up()
            rig.run(60_000, lambda: in_run(rig))
            assert len(b.attributes[NAME]) == attr_after_marker, (k, after)
    # First boot writes the boot record, credentials, the attributes marker, then the pulse
    # index: each was cut
    # before and after its rename.
    assert [c[2] for c in cuts if not c[1]][:4] == ["boot", "creds", "attrs", "pulses"], cuts
    assert len([c for c in cuts if c[1]]) >= 4, cuts


# --- telemetry and the pulse index ------------------------------------------------------------

def test_index_is_on_flash_before_it_is_published_and_writes_are_rate_bounded():
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    writes0 = rig.store.writes
    published_max = 0
    for minute in range(30):
        rig.pulse(20, gap_ms=1000)
        rig.run(40_000)
        tele = [m for m in rig.broker.messages(TELE) if "values" in m and "pulses" in m["values"]]
        if tele:
            published_max = max(m["values"]["pulses"] for m in tele)
        on_flash = Store(_NullLog()).read("pulses")["index"]
        assert on_flash >= published_max
    assert rig.store.writes - writes0 <= 31  # at most one index write a minute (+1)


def test_the_index_survives_reboots_and_never_goes_backwards():
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.pulse(50, gap_ms=200)
    rig.run(70_000)
    rig.cut_power()
    rig.power_up()
    rig.pulse(10)
    rig.run(70_000)
    seen = [m["values"]["pulses"] for m in rig.broker.messages(TELE)
            if "values" in m and "pulses" in m["values"]]
    assert seen == sorted(seen) and seen[-1] >= 50


def test_readings_taken_while_offline_are_sent_in_order_after_reconnecting():
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.hal.wifi_up = False
    for _ in range(5):
        rig.pulse(3)
        rig.run(60_000)
    rig.hal.wifi_up = True
    rig.run(120_000, lambda: in_run(rig))
    rig.run(10_000)
    pts = []
    for m in rig.broker.messages(TELE):
        for p in (m if isinstance(m, list) else [m]):
            if "values" in p and "pulses" in p["values"]:
                pts.append((p["ts"], p["values"]["pulses"]))
    assert [t for t, _ in pts] == sorted(t for t, _ in pts)
    # The reading taken at boot, then one a minute through the outage: none lost.
    assert len(pts) == 6 and pts[0][1] == 0 and pts[-1][1] == 15


def test_the_first_reading_is_taken_as_soon_as_the_clock_is_synced_not_an_interval_later():
    rig = Rig(provisioned())  # publish_interval_s 60
    assert rig.run(60_000, lambda: in_run(rig))
    assert rig.run(2_000, lambda: any("pulses" in m.get("values", m) for m in rig.broker.messages(TELE)))


def test_time_sync_failure_continues_with_server_time():
    rig = Rig(provisioned())
    rig.hal.time_ok = False
    assert rig.run(120_000, lambda: in_run(rig))
    rig.pulse(2)
    rig.run(70_000)
    tele = [m for m in rig.broker.messages(TELE) if "pulses" in m]
    assert tele and "ts" not in tele[-1]
    assert "no time from" in rig.text()


def test_wifi_that_never_joins_backs_off():
    rig = Rig(provisioned())
    rig.hal.wifi_up = False
    rig.run(10 * 60_000)
    assert 4 <= rig.hal.wifi_joins <= 15
    assert rig.broker.connects == []


@pytest.mark.parametrize("new_api", [True, False])
def test_tls_with_both_umqtt_apis(new_api):
    rig = Rig(provisioned(), new_api=new_api, tb_tls=True, tb_plain_ok=False)
    assert rig.run(60_000, lambda: in_run(rig))
    ctx = rig.hal.ssl.contexts[0]
    assert ctx.verify_mode == rig.hal.ssl.CERT_REQUIRED and ctx.cadata == b"\x30\x03der"
    assert ctx.wrapped and set(ctx.wrapped) == {"tb.test"}  # host name checked
    assert rig.broker.connects[-1][2] == 0


def test_tls_handshake_failure_is_a_transient_error_not_a_reason_to_provision():
    rig = Rig(provisioned(), tb_tls=True, tb_plain_ok=False)
    rig.hal.ssl.contexts[0].fail = ValueError("The certificate is not correctly signed by the trusted CA")
    rig.run(5 * 60_000)
    assert rig.broker.connects == [] and rig.broker.provision_requests == []
    assert "not correctly signed" in rig.text()


def test_memory_error_while_building_a_message_halves_the_batch_instead_of_resetting(monkeypatch):
    from firmware import telemetry
    rig = Rig(provisioned())
    rig.run(60_000, lambda: in_run(rig))
    rig.hal.wifi_up = False
    for _ in range(5):
        rig.pulse(2)
        rig.run(60_000)
    rig.hal.wifi_up = True
    real = telemetry.Payload.batch
    calls = [0]

    def flaky(self, readings, per_kwh):
        calls[0] += 1
        if calls[0] <= 2:
            raise MemoryError("fragmented")
        return real(self, readings, per_kwh)

    monkeypatch.setattr(telemetry.Payload, "batch", flaky)
    assert rig.run(120_000, lambda: in_run(rig) and len(rig.backlog) == 0)
    assert rig.meter.pipeline._batch_max == 5 and "low memory: 5 readings per message" in rig.text()


def test_session_closed_while_subscribing_is_a_retry_not_a_crash():
    rig = Rig(provisioned())
    rig.broker.close_on_subscribe = 2
    assert rig.run(120_000, lambda: in_run(rig))
    assert rig.text().count("subscribe to v1/devices/me/rpc/request/+: connection closed") == 2
    assert len([c for c in rig.broker.connects if c[1] != "provision"]) == 3


def test_a_session_closed_right_after_connack_keeps_the_backoff_growing():
    # A server that accepts the CONNECT and then drops the session (rate limits, a crash loop)
    # must not get a reconnect every retry_min_s: the backoff resets only after a PUBACK.
    rig = Rig(provisioned())
    assert rig.run(60_000, lambda: in_run(rig))
    rig.broker.close_after_connect = 6
    rig.broker.sessions[-1]._raw().peer_closed = True  # and the session in use is closed now
    n0 = len(rig.broker.connects)
    assert rig.run(30 * 60_000, lambda: len(rig.broker.connects) >= n0 + 7)
    times = [c[3] for c in rig.broker.connects[n0:]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1_000 and gaps[-1] >= 32_000, gaps  # 2 s doubling: 64 s, less jitter
    rig.run(120_000)
    assert in_run(rig)


def test_a_batch_the_server_closes_on_is_split_then_grows_back():
    rig = Rig(provisioned(), publish_interval_s=5)
    assert rig.run(60_000, lambda: in_run(rig))
    rig.hal.wifi_up = False
    for _ in range(30):  # 30 readings wait
        rig.pulse(1)
        rig.run(5_000)
    rig.broker.close_batches_over = 6  # tighter than ThingsBoard Cloud: 20 readings is too many
    rig.hal.wifi_up = True
    assert rig.run(10 * 60_000, lambda: len(rig.backlog) == 0)
    sizes = [len(m) if isinstance(m, list) else 1 for m in rig.broker.messages(TELE)]
    assert max(sizes) <= 6 and sum(sizes) >= 30
    assert "connection lost sending 20 readings: 10 readings per message for now" in rig.text()
    assert "connection lost sending 10 readings: 5 readings per message for now" in rig.text()
    # Acknowledged messages at the smaller size let it grow back.
    rig.broker.close_batches_over = None
    for _ in range(25):
        rig.run(5_000)
    assert rig.meter.pipeline._batch_max == 10
