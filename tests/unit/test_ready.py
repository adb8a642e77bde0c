"""Ready credentials in config.json (issue 17), the device profile's topics (issue 17) and the
MQTT keepalive (issue 11 §2), against the fake broker: the real firmware, wired as main.py
wires it (harness.Rig)."""

import json

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
TOKEN = "ready-token-0001"
READY = {"provision_key": None, "provision_secret": None, "access_token": TOKEN}
RPC = "v1/devices/me/rpc/request/"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class _NullLog:
    def warn(self, *a):
        pass


def in_run(rig):
    return rig.meter is not None and rig.meter.state == M.RUN


def running(broker, **over):
    rig = Rig(broker, **over)
    assert rig.run(60_000, lambda: in_run(rig)), rig.text()[-2000:]
    return rig


def with_device(token=TOKEN):
    b = FakeBroker()
    b.add_device(NAME, token)
    return b


def device_sessions(broker):
    return [s for s in broker.sessions if not s.provision]


def provisioned(broker):
    return broker.provision_requests or [c for c in broker.connects if c[1] == "provision"]


# --- ready credentials -----------------------------------------------------------------------------

def test_a_config_token_alone_is_connected_with_and_never_provisioned():
    b = with_device()
    rig = running(b, **READY)
    rig.pulse(3)
    rig.run(70_000)
    assert not provisioned(b)
    assert {c[1] for c in b.connects} == {TOKEN}
    assert b.attributes[NAME], "the one-shot attributes were sent"
    assert b.messages("v1/devices/me/telemetry"), "readings were sent"
    assert "(token " in rig.text()  # the connect line: a token, masked
    assert Store(_NullLog()).read("creds") is None  # nothing of it written to flash


def test_mqtt_basic_fields_are_connected_with_as_they_are():
    b = FakeBroker()
    b.basic[("cid-0001", "user-0001", "pass-0001")] = NAME
    rig = running(b, provision_key=None, provision_secret=None, mqtt_client_id="cid-0001",
                  mqtt_username="user-0001", mqtt_password="pass-0001")
    assert not provisioned(b)
    assert [(c[0], c[1], c[2]) for c in b.connects] == [("cid-0001", "user-0001", 0)]
    assert b.sessions[-1].pswd == b"pass-0001"
    assert rig.meter.creds == {"type": "MQTT_BASIC", "clientId": "cid-0001",
                               "userName": "user-0001", "password": "pass-0001"}
    # All three are secrets (config.SECRET_FIELDS): the log shows none of them in full.
    text = rig.text()
    assert "connect: to " in text
    for secret in ("cid-0001", "user-0001", "pass-0001"):
        assert secret not in text, secret


def test_ready_credentials_replace_what_an_earlier_provisioning_stored():
    b = FakeBroker()
    b.add_device("meter-on-the-bench", "the-new-token-0002")
    rig = running(b)  # provisions: creds.json holds an issued token
    issued = Store(_NullLog()).read("creds")["token"]
    assert issued != "the-new-token-0002"
    rig.cut_power()
    rig.power_up(provision_key=None, provision_secret=None, access_token="the-new-token-0002")
    n = len(b.provision_requests)
    assert rig.run(60_000, lambda: in_run(rig))
    assert b.connects[-1][1] == "the-new-token-0002" and len(b.provision_requests) == n


@pytest.mark.parametrize("rc", [4, 5])
def test_refused_ready_credentials_ask_for_a_technician_and_retry_slowly(rc):
    b = FakeBroker()  # the platform knows no such token
    b.connect_script = [rc] * 100
    rig = Rig(b, retry_slow_s=60, **READY)
    rig.run(900_000)  # 15 min
    assert not provisioned(b)
    times = [c[3] for c in b.connects]
    # retry_slow_s, jittered to [d/2, d] and doubling: never sooner than 30 s apart, so a few
    # attempts in 15 min, not a storm.
    assert 2 <= len(times) <= 12, times
    assert min(t2 - t1 for t1, t2 in zip(times, times[1:])) >= 30_000
    lines = [ln for ln in rig.lines if "credentials refused" in ln]
    assert len(lines) == len(times)  # one line per refusal, saying what to do
    assert "credentials refused (CONNACK %d)" % rc in lines[0]
    assert "a technician must put the device's credentials in config.json; retrying in" in lines[0]
    assert TOKEN not in rig.text()
    assert rig.meter._led.name == "waiting"
    assert rig.meter.state == M.CONNECT


def test_the_gesture_cannot_provision_a_meter_with_ready_credentials():
    b = with_device()
    rig = running(b, **READY)
    rig.run(15_000)
    for _ in range(4):  # the power-cycle gesture
        rig.cut_power()
        rig.power_up()
        rig.run(3000)
    assert rig.run(60_000, lambda: in_run(rig))
    text = rig.text()
    assert "re-provisioning requested (power-cycle gesture)" in text
    assert "not possible: no provision_key in config.json" in text
    assert not provisioned(b)
    assert Store(_NullLog()).read("boot")["req"] is False  # served: not again at every boot
    rig.cut_power()
    rig.power_up()
    assert rig.run(60_000, lambda: in_run(rig))
    assert rig.text().count("re-provisioning requested") == 1


def test_the_rpc_and_the_boot_button_cannot_provision_it_either():
    b = with_device()
    rig = running(b, **READY)
    b.sessions[-1].pending.append(((RPC + "5").encode(), b'{"method":"reprovision"}'))
    rig.run(2000)
    rig.hal.button = True
    rig.run(3500)
    rig.hal.button = False
    rig.run(10_000)
    text = rig.text()
    assert "re-provisioning requested (RPC reprovision)" in text
    assert "re-provisioning requested (BOOT button)" in text
    assert text.count("not possible: no provision_key in config.json") == 2
    assert not provisioned(b) and in_run(rig) and len(device_sessions(b)) == 1


# --- the device profile's topics -------------------------------------------------------------------

def test_readings_health_version_report_and_attributes_go_to_the_configured_topics():
    b = FakeBroker()
    rig = running(b, telemetry_topic="meters/m1/telemetry", attributes_topic="meters/m1/attrs",
                  health_interval_s=5)
    rig.pulse(3)
    rig.run(70_000)
    sent = [json.loads(p) for (_c, _u, t, p, _q) in b.published if t == "meters/m1/telemetry"]
    assert any("current_fw_version" in m for m in sent)
    assert any("uptime_s" in m.get("values", m) for m in sent if isinstance(m, dict))
    assert any("pulses" in (r.get("values", r)) for m in sent
               for r in (m if isinstance(m, list) else [m]))
    assert b.messages("meters/m1/attrs") == [{"Power_suppier_secret_key": "supplier-secret-0001",
                                              "CUPs": rig.cfg["cups"]}]
    topics = {t for (_c, u, t, _p, _q) in b.published if u != "provision"}
    # ThingsBoard fixes these whatever the profile says (docs/thingsboard.md §6, §14.10).
    assert topics == {"meters/m1/telemetry", "meters/m1/attrs",
                      "v1/devices/me/attributes/request/1"}
    assert set(b.sessions[-1].subscribed) == {b"v1/devices/me/rpc/request/+",
                                              b"v1/devices/me/attributes"}
    assert "reporting every 60 s to meters/m1/telemetry" in rig.text()


# --- keepalive ---------------------------------------------------------------------------------------

def client_packets(broker):
    seen = []

    def hook(session, first, body):
        seen.append((broker.now_ms(), first))
        return False

    broker.hook = hook
    return seen


def test_a_quiet_session_is_kept_alive_with_pingreqs_before_the_keepalive():
    b = FakeBroker()
    seen = client_packets(b)
    rig = running(b, publish_interval_s=600, health_interval_s=0, keepalive_s=20)
    rig.run(300_000)
    s = b.sessions[-1]
    assert len(device_sessions(b)) == 1
    assert s.pings >= 300 // 20, s.pings
    times = [t for t, _first in seen if t >= b.connects[-1][3]]
    gaps = [t2 - t1 for t1, t2 in zip(times, times[1:])]
    assert max(gaps) <= 20_000, max(gaps)  # never 1.5 x keepalive, nor the keepalive itself


def test_no_pingresp_within_the_deadline_is_a_lost_connection_reconnected_with_backoff():
    b = FakeBroker()
    b.pingresp = False
    rig = running(b, publish_interval_s=600, health_interval_s=0, keepalive_s=20)
    assert rig.run(60_000, lambda: "no PINGRESP" in rig.text())
    lost = b.now_ms()
    assert b.sessions[-1].pings == 1  # one PINGREQ, then the link's 10 s deadline
    line = [ln for ln in rig.lines if "no PINGRESP" in ln][0]
    assert "connection lost (receive: no PINGRESP within 10 s); reconnecting in" in line
    assert rig.run(60_000, lambda: len(device_sessions(b)) == 2)
    assert b.connects[-1][3] - lost >= 1000  # retry_min_s 2, jittered: at least 1 s
