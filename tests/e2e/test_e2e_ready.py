"""Ready credentials in config.json, the device profile's topics (issue 17) and the MQTT
keepalive (issue 11 §2): the real firmware on the Unix port against tbsim."""

import json
import subprocess
import time

import pytest

from e2e_support import SUPPLIER, base_config, cups_for, device_name
from lab.meterhost import MICROPYTHON
from tbsim import Profile, TBSim
from tools.deploy import format_status

NAME = device_name()
TOKEN = "ready-token-a1b2c3d4e5"


def running(m, since=0, timeout=30):
    return m.wait_for(r"state: \S+ -> run", timeout, since)


def device_connects(sim):
    return [e for e in sim.events("connect") if e.get("session") == "device"]


def status(m):
    """What `make status` shows for this meter: firmware/report.py run over its flash (the
    meter's power off), printed as tools/deploy.py prints it."""
    script = "from firmware.hal.unix import Hal\nHal().mount()\nfrom firmware import report\nreport.main()"
    env = dict(m.env(), MICROPYPATH="%s/lib:%s:.frozen" % (m.device_dir, m.device_dir))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + m.heap, "-c", script], cwd=m.dir,
                       env=env, capture_output=True, text=True, timeout=60)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert line, r.stdout + r.stderr
    return format_status(json.loads(line[-1]))


def test_a_config_token_connects_without_provisioning_and_refusal_asks_for_a_technician(sim, meters):
    sim.add_device(NAME, token=TOKEN)
    m = meters(base_config(sim, provision_key=None, provision_secret=None, access_token=TOKEN))
    m.power_on()
    assert running(m), m.text()
    m.pulse(1)
    assert sim.wait_for(lambda: "pulses" in sim.device(NAME)["latestTelemetry"], 20), m.text()[-3000:]
    assert sim.wait_for(lambda: sim.device(NAME)["clientAttributes"].get("CUPs") == cups_for(1))
    assert sim.events("provision") == []
    assert [e["returnCode"] for e in device_connects(sim)] == [0]
    # The device deleted on the platform: the token is refused, and there is nothing to
    # provision with. One line says so; the next try is retry_slow_s away (1 h by default).
    t = time.time()
    sim.delete_device(NAME)
    assert m.wait_for(r"credentials refused \(CONNACK 5\).*a technician must put", 30, t)
    time.sleep(3)
    assert sim.events("provision") == [] and len(device_connects(sim)) == 2
    assert m.count("credentials refused") == 1
    assert TOKEN not in m.text()
    m.power_cut()
    assert "credentials       ACCESS_TOKEN from config.json (never provisioned)" in status(m)


TOPICS = Profile("topics-profile-key", "topics-profile-secret", telemetry_topic="meters/+/telemetry",
                 attributes_topic="meters/+/attributes")


def topics_config(sim, **over):
    return base_config(sim, provision_key=TOPICS.key, provision_secret=TOPICS.secret, **over)


def test_a_meter_on_a_custom_topic_profile_reports_on_the_configured_topics(sim, meters):
    sim.add_profile(TOPICS)
    m = meters(topics_config(sim, telemetry_topic="meters/m1/telemetry",
                             attributes_topic="meters/m1/attributes"))
    m.power_on()
    assert running(m), m.text()
    m.pulse(1)
    assert sim.wait_for(lambda: "pulses" in sim.device(NAME)["latestTelemetry"], 20), m.text()[-3000:]
    dev = sim.device(NAME)
    assert dev["clientAttributes"] == {"Power_suppier_secret_key": SUPPLIER, "CUPs": cups_for(1)}
    assert "current_fw_version" in dev["latestTelemetry"]
    assert "reporting every 5 s to meters/m1/telemetry" in m.text()
    assert not [e for e in sim.events("publish") if e.get("reason") == "unknown-topic"]


def test_a_topic_mismatch_is_acknowledged_and_dropped_and_shows_in_log_and_status(sim, meters):
    # The profile has custom topic filters; the meter's config keeps ThingsBoard's defaults.
    sim.add_profile(TOPICS)
    m = meters(topics_config(sim))
    m.power_on()
    assert running(m), m.text()
    m.pulse(3)
    dropped = lambda: [e for e in sim.events("publish")  # noqa: E731
                       if e.get("reason") == "unknown-topic" and e["topic"] == "v1/devices/me/telemetry"]
    assert sim.wait_for(lambda: len(dropped()) >= 3, 30)
    # Every PUBLISH was acknowledged (the meter marks its attributes sent, reports no error),
    # and the platform stored nothing.
    dev = sim.device(NAME)
    assert dev["latestTelemetry"] == {} and dev["clientAttributes"] == {}
    assert "reporting every 5 s to v1/devices/me/telemetry" in m.text()
    assert "attributes: acknowledged" in m.text()
    m.power_cut()
    shown = status(m)
    assert "topics            telemetry v1/devices/me/telemetry, attributes v1/devices/me/attributes" in shown
    assert "attributes        sent, current" in shown


@pytest.fixture
def quick_sim():
    # ThingsBoard closes a session after transport.sessions.inactivity_timeout without a
    # PUBLISH, SUBSCRIBE or PINGREQ (docs/thingsboard.md §9): 600 s there, 15 s here.
    from e2e_support import KEY, SECRET
    s = TBSim(profiles=[Profile(KEY, SECRET)], provision_close_s=5.0, inactivity_timeout_s=15.0)
    s.start()
    yield s
    s.stop()


def test_a_quiet_meter_keeps_its_session_with_pingreqs(quick_sim, meters):
    sim = quick_sim
    m = meters(base_config(sim, publish_interval_s=20, health_interval_s=20, keepalive_s=10))
    m.power_on()
    assert running(m), m.text()
    t = time.time()
    time.sleep(65)  # 3 publish and health intervals, each longer than the inactivity timeout
    assert [e["returnCode"] for e in device_connects(sim)] == [0], m.text(t)
    assert not [e for e in sim.events("close") if e.get("reason") == "inactivity"]
    assert m.count("connection lost", t) == 0
    pings = [e for e in sim.events("ping") if e["t"] >= t]
    assert len(pings) >= 6, len(pings)  # every 7.5 s: 3/4 of keepalive_s
    assert len([e for e in sim.telemetry(NAME) if "pulses" in e["values"]]) >= 3
