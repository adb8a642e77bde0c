"""Builds a real Meter around the fakes, with a real Store in the test's directory."""

import json
import random

from fakes import FakeBroker, FakeHal, FakeUmqtt
from firmware import config
from firmware.cups import check_letters
from firmware.gesture import BootGesture
from firmware.link import Link
from firmware.log import Log
from firmware.meter import Meter
from firmware.pulses import PulseCounter
from firmware.backlog import Backlog
from firmware.remote import Remote
from firmware.startup import tls_context
from firmware.led import StatusLed
from firmware.store import Store

DIGITS = "0021000000012345"
CUPS = "ES" + DIGITS + check_letters(DIGITS) + "0F"
BASE = {
    "wifi_ssid": "meters", "wifi_password": "wifi-pass-1234",
    "tb_host": "tb.test", "tb_tls": False, "tb_plain_ok": True,
    "provision_key": "prov-key-abc123", "provision_secret": "prov-secret-xyz789",
    "supplier_key": "supplier-secret-0001", "cups": CUPS, "pulse_pin": 4,
    "retry_min_s": 2, "retry_max_s": 60, "retry_slow_s": 3600,
}
STEP_MS = 20


def make_cfg(**over):
    raw = dict(BASE)
    raw.update(over)
    cfg, errors = config.validate(raw)
    assert not errors, errors
    return cfg


class Rig:
    """One simulated meter: power it up, let it run, cut its power, power it up again."""

    def __init__(self, broker=None, new_api=True, seed=1, start=True, **cfg_over):
        self.broker = broker or FakeBroker()
        self.hal = FakeHal(broker=self.broker)
        self.umqtt = FakeUmqtt(self.broker, new_api=new_api)
        self.cfg = make_cfg(**cfg_over)
        self.rand = random.Random(seed).random
        self.lines = []
        self.boots = 0
        self.meter = None
        if start:
            self.power_up()

    def power_up(self, **cfg_over):
        if cfg_over:
            self.cfg = make_cfg(**dict(self._over(), **cfg_over))
        hal, cfg = self.hal, self.cfg
        hal.wifi_joined = False
        self.log = Log(hal.ticks_ms, self.lines.append)
        self.store = Store(self.log)
        self.pulses = PulseCounter(hal.ticks_us, hal.ticks_diff, cfg["pulses_per_kwh"],
                                   cfg["pulse_min_interval_ms"], cfg["zero_power_timeout_s"])
        self.pulses.hw = hal.pulse_input(cfg["pulse_pin"], True, "falling", self.pulses.edge, False)
        self.link = Link(self.umqtt, hal.socket, hal.ticks_ms, hal.ticks_diff, self.log)
        tls = tls_context(hal.ssl, b"\x30\x03der") if cfg["tb_tls"] else None
        gesture = BootGesture(self.store, cfg["reprovision_cycles"],
                              cfg["reprovision_window_s"] * 1000, hal.ticks_diff)
        led = StatusLed(hal.led_setter(None, False), hal.ticks_diff)
        self.backlog = Backlog(self.log, cfg["buffer_points"])
        self.remote = Remote(self.log)
        self.meter = Meter(hal, cfg, self.store, self.link, self.pulses, self.backlog,
                           self.log, self.rand, cfg["device_name"] or "meter-a1b2c3d4e5f6",
                           tls=tls, gesture=gesture, led=led, extensions=self.remote)
        self.boots += 1
        self.meter.start()
        return self.meter

    def _over(self):
        return {k: v for k, v in self.cfg.items() if k in BASE or self.cfg[k] != config.FIELDS[k][1]}

    def run(self, ms, until=None):
        """Step the meter for up to ms of simulated time; stop early when until() holds."""
        end = self.hal.clock.us + ms * 1000
        while self.hal.clock.us < end:
            self.meter.step()
            if until is not None and until():
                return True
            self.hal.sleep_ms(STEP_MS)
        return until() if until is not None else True

    def pulse(self, n=1, gap_ms=100):
        for _ in range(n):
            self.hal.handler(None)
            self.hal.clock.advance_ms(gap_ms)
            self.meter.step()

    def text(self):
        return "\n".join(self.lines)

    def cut_power(self):
        """SIGKILL: the meter object is dropped mid-flight; flash keeps what was written."""
        if self.meter is not None:
            self.link.close(graceful=False)
        self.meter = None
