"""The BOOT button (issue 13): GPIO0 held while power comes on starts the ESP32's ROM loader, so
the firmware looks for the re-provision press after boot (3 s, judged on release; 10 s is setup
mode), polled, never blocking the loop.
On the Unix port the button is a file (METER_BUTTON, lab/meterhost.py)."""

import time

from e2e_support import base_config, device_name

NAME = device_name()


def attribute_posts(sim):
    return [e for e in sim.events("attributes") if e.get("device") == NAME]


def test_a_press_after_boot_requests_reprovisioning_and_keeps_the_working_credentials(sim, meters):
    m = meters(base_config(sim))
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    token = m.record("creds")["token"]
    time.sleep(11)  # past the gesture window
    m.power_cut()
    t = time.time()
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30, t), m.text(t)
    time.sleep(1)
    m.press_button(True)  # seconds after boot, for 4 s
    time.sleep(4)
    m.press_button(False)
    assert m.wait_for(r"re-provisioning requested \(BOOT button\)", 5, t), m.text(t)
    assert m.wait_for(r"provision: FAILURE", 15, t), m.text(t)
    assert m.wait_for(r"keeping the working credentials", 5, t)
    assert m.wait_for(r"attributes: acknowledged", 15, t)
    assert m.record("creds")["token"] == token
    assert sim.wait_for(lambda: len(attribute_posts(sim)) == 2)
    # Pulses kept being counted while the button was down: the loop never waited on it.
    assert m.count(r"main: unexpected", t) == 0
