"""The last-chance handler (firmware/entry.py, which main.py runs). An unexpected exception deep
in the main loop (injected by the Unix HAL: METER_FAULT_MS) is logged with its traceback, the
pulse index is saved, and the board resets after a pause that grows with repeated crashes. The
pulses counted while the main loop was down (the pause) are saved before the reset: nothing is
lost."""

import time

from e2e_support import base_config, device_name
from lab.meterhost import PulseTrain

NAME = device_name()


def test_an_unexpected_fault_is_logged_saved_and_reset_after_a_pause(sim, meters):
    m = meters(base_config(sim), env={"METER_FAULT_MS": "6000"})
    m.faults_injected = True
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    train = PulseTrain(m, 1000, lambda t: 36_000.0)  # 10 pulses/s, through the fault and pause
    train.start()
    assert m.wait_for(r"main: unexpected RuntimeError: injected fault", 15), m.text()
    t_fault = time.time()
    del m.extra_env["METER_FAULT_MS"]  # the boot after the reset runs clean
    assert m.wait_for(r"main: resetting in 10 s", 5, t_fault - 1)
    assert m.wait_for(r"main: meter firmware starting", 20, t_fault), m.text(t_fault)
    (t_boot,) = [t for t, line in m.lines if t >= t_fault and "firmware starting" in line]
    assert t_boot - t_fault >= 9.5  # the pause: no crash loop hammering flash or server
    assert m.wait_for(r"state: \S+ -> run", 30, t_boot), m.text(t_boot)
    time.sleep(3)
    train.stop()
    train.join()
    # Every pulse, including those of the pause, reaches the server exactly.
    assert sim.wait_for(lambda: sim.device(NAME)["latestTelemetry"].get("pulses")
                        == m.pulses_delivered, 30), \
        (m.pulses_delivered, sim.device(NAME)["latestTelemetry"])
    # Lost: only those of the reset's own window, from the firmware's last save to the next
    # boot's pulse input (a board's PCNT is reset with the chip and configured again by the
    # firmware; firmware/hal/unix.py), a few at 10 pulses/s: none of the pause's (100).
    assert m.pulses_lost_off <= 20 and m.pulses_delivered > 100, \
        (m.pulses_lost_off, m.pulses_before_input, m.pulses_delivered)
    assert sim.device(NAME)["latestTelemetry"]["energy_kwh"] == m.pulses_delivered / 1000
    # The crash is counted: a second one soon would pause 20 s.
    assert m.record("crash") == {"n": 1}
    assert len(sim.events("provision")) == 1
    # The boot after the crash's reset is a reset, not a power-up: it does not count toward
    # the power-cycle gesture (the first boot's count, still within its window when it
    # crashed, goes back to 0 instead of on to 2).
    assert m.wait_for(r"boot: device \S+, after a reset,", 1, t_fault), m.text(t_fault)
    assert m.record("boot") == {"n": 0, "req": False}
