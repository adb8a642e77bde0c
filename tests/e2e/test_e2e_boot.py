"""Boot, provisioning and re-provisioning of the real firmware against tbsim."""

import time

from e2e_support import KEY, SECRET, SUPPLIER, base_config, cups_for, device_name
from tbsim import Profile
from tools.build_device import firmware_version

NAME = device_name()


def attribute_posts(sim, name=NAME):
    return [e for e in sim.events("attributes") if e.get("device") == name]


def provisions(sim):
    return sim.events("provision")


def running(m, since=0, timeout=30):
    return m.wait_for(r"state: \S+ -> run", timeout, since)


def fw_reports(sim, name=NAME):
    return [e["values"] for e in sim.telemetry(name) if "current_fw_version" in e["values"]]


def test_first_boot_provisions_sends_attributes_once_and_reboot_sends_nothing(sim, meters):
    title, version, _source = firmware_version()  # what tools/build_device.py stamped
    m = meters(sim)
    m.power_on()
    assert running(m), m.text()
    assert "main: meter firmware starting on unix: %s %s" % (title, version) in m.text()
    assert sim.wait_for(lambda: attribute_posts(sim))
    dev = sim.device(NAME)
    assert dev["clientAttributes"] == {"Power_suppier_secret_key": SUPPLIER, "CUPs": cups_for(1)}
    # The firmware's title and version as time series, where ThingsBoard's firmware dashboard
    # reads them (docs/thingsboard.md §14.6).
    assert sim.wait_for(lambda: fw_reports(sim))
    assert fw_reports(sim) == [{"current_fw_title": title, "current_fw_version": version}]
    token = dev["credentials"]
    assert m.record("creds") == {"type": "ACCESS_TOKEN", "token": token}
    assert [p["status"] for p in provisions(sim)] == ["SUCCESS"]
    m.power_cut()
    t = time.time()
    m.power_on()
    assert running(m, t)
    time.sleep(1)
    assert len(provisions(sim)) == 1 and len(attribute_posts(sim)) == 1
    assert len(fw_reports(sim)) == 1
    connects = [e for e in sim.events("connect") if e.get("session") == "device"]
    assert connects[-1]["returnCode"] == 0 and connects[-1]["clientId"] == NAME
    for secret in (SECRET, SUPPLIER, token, "sim-wifi-password"):
        assert secret not in m.text()


def test_energy_at_the_server_equals_pulses_over_pulses_per_kwh_exactly(sim, meters):
    # The pulses come in bursts microseconds apart (no bounce): with the debounce on, the
    # interrupt handler would rightly take most of them for bounce, and the counter's count
    # with them (firmware/pulses.py). Without it every edge is a pulse, on both paths.
    m = meters(base_config(sim, pulse_min_interval_ms=0))
    m.power_on()
    assert running(m)
    n = 1234
    for i in range(n):
        m.pulse(1)
        if i % 50 == 0:
            time.sleep(0.05)
    assert sim.wait_for(lambda: (sim.device(NAME)["latestTelemetry"].get("pulses") == n), 40)
    latest = sim.device(NAME)["latestTelemetry"]
    assert latest["energy_kwh"] == n / 1000 == 1.234
    assert m.pulses_delivered == n


def test_invalid_config_sends_nothing_and_names_each_field(sim, meters):
    cfg = base_config(sim, cups="ES0021000000012345XX", pulse_pin="four", tb_prot=1)
    m = meters(cfg)
    m.power_on()
    assert m.wait_for("meter halted", 10)
    time.sleep(1)
    text = m.text()
    assert "cups: check letters should be" in text
    assert "pulse_pin: must be an integer" in text
    assert "tb_prot: unknown field" in text
    assert "pattern config-error" in text
    assert sim.events("connect") == []


def test_wrong_provision_secret_gets_not_found_and_backs_off_for_long(sim, meters):
    m = meters(base_config(sim, provision_secret="not-the-secret-at-all"))
    m.power_on()
    assert m.wait_for(r"NOT_FOUND: Provision data was not found!", 15)
    assert m.wait_for(r"retrying in \d+ min", 5)
    assert m.wait_for("pattern waiting", 5)
    time.sleep(5)
    assert len(provisions(sim)) == 1  # retry_slow_s is 3600: nothing more for a long time


def test_device_supplied_token_connects_after_failure_for_an_existing_name(sim, meters):
    sim.add_device(NAME, profile_key=KEY, token="device-token-from-the-factory-01")
    m = meters(base_config(sim, access_token="device-token-from-the-factory-01"))
    m.power_on()
    assert running(m), m.text()
    assert [p["status"] for p in provisions(sim)] == ["FAILURE"]
    assert m.record("creds")["token"] == "device-token-from-the-factory-01"
    assert sim.wait_for(lambda: attribute_posts(sim))


def test_deleted_device_gets_connack_5_and_the_meter_provisions_again(sim, meters):
    m = meters(sim)
    m.power_on()
    assert running(m)
    first = sim.device(NAME)["credentials"]
    t = time.time()
    sim.delete_device(NAME)  # closes the session; the next CONNECT gets CONNACK 5
    assert m.wait_for(r"credentials refused \(CONNACK 5\)", 30, t), m.text(t)
    assert running(m, t)
    assert sim.wait_for(lambda: sim.device(NAME) is not None)
    assert sim.device(NAME)["credentials"] != first
    assert m.record("creds")["token"] == sim.device(NAME)["credentials"]
    assert sim.wait_for(lambda: len(attribute_posts(sim)) == 2)


def test_server_down_at_boot_backs_off_then_recovers(sim, meters):
    m = meters(sim)
    sim.stop()
    t = time.time()
    m.power_on()
    time.sleep(12)
    fails = m.count(r"connection refused|failed|NO_REPLY", t)  # one line per attempt
    assert 3 <= fails <= 8, m.text(t)  # 1 s doubling to 10 s: a handful, not a hammer
    sim.start()
    assert running(m, t, timeout=30), m.text(t)
    assert sim.device(NAME) is not None


def test_gesture_keeps_working_credentials_on_failure_and_provisions_where_allowed(sim, meters):
    # A check-pre-provisioned profile: the administrator creates the device; a second
    # provisioning is refused until they reset it (docs/thingsboard.md §2.3, §2.8).
    sim.add_profile(Profile("pre-key-000001", "pre-secret-000001", strategy="check-pre-provisioned"))
    sim.add_device(NAME, profile_key="pre-key-000001", token="admin-made-token-0001")
    m = meters(base_config(sim, provision_key="pre-key-000001", provision_secret="pre-secret-000001"))
    m.power_on()
    assert running(m)
    assert m.wait_for("attributes: acknowledged", 5)
    time.sleep(11)  # past the gesture window: this boot does not count

    def gesture():
        t0 = time.time()
        for _ in range(4):
            m.power_cut()
            m.power_on()
            assert m.wait_for(r"main: meter firmware starting", 5, time.time() - 0.1)
            time.sleep(1.5)
        return t0

    t = gesture()
    assert m.wait_for("re-provisioning requested", 10, t)
    assert m.wait_for("provision: FAILURE", 15, t), m.text(t)
    assert m.wait_for("keeping the working credentials", 5, t)
    assert running(m, t)
    assert m.record("creds")["token"] == "admin-made-token-0001"
    assert sim.wait_for(lambda: len(attribute_posts(sim)) == 2)  # attributes sent again

    # The administrator resets the device (delete and re-create it, not provisioned).
    time.sleep(11)
    sim.delete_device(NAME)
    sim.add_device(NAME, profile_key="pre-key-000001", token="admin-made-token-0001")
    t = gesture()
    assert m.wait_for("provision: SUCCESS", 15, t), m.text(t)
    assert running(m, t)
    assert sim.device(NAME)["serverAttributes"].get("provisionState") == "provisioned"
