"""Builds the real meter around the fakes (firmware/wiring.py, as main.py does), with a real Store in the test's directory."""

import json
import random

from fakes import FakeBroker, FakeHal, FakeUmqtt
from firmware import config, wiring
from firmware.cups import check_letters
from firmware.log import Log
from firmware.startup import tls_context
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
        tls = tls_context(hal.ssl, b"\x30\x03der") if cfg["tb_tls"] else None
        # The firmware's own wiring, as main.py runs it on the board.
        self.meter = wiring.build(hal, self.umqtt, self.log, self.store, cfg, tls, rand=self.rand)
        self.link = self.meter.link
        self.pulses = self.meter.pipeline.pulses
        self.backlog = self.meter.pipeline.queue
        self.boots += 1
        self.meter.start()
        return self.meter

    def _over(self):
        return {k: v for k, v in self.cfg.items() if k in BASE or k in config.FIELDS and
                self.cfg[k] != config.FIELDS[k][1]}

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
        self.hal.cause = 0  # power comes back: a power-up (FakeHal.reset() makes it a reset)
