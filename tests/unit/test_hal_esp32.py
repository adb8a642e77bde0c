"""The ESP32 hardware boundary (firmware/hal/esp32.py) on CPython, with fake machine, network,
socket, ssl and time modules put in sys.modules while it is imported: the calls it makes to
the board, in order."""

import importlib
import sys
import types

import pytest

from fakes import FakeClock


class Calls(list):
    def __call__(self, *event):
        self.append(event)


def _fake_board(calls, counter=True):
    machine = types.ModuleType("machine")

    class Pin:
        IN, OUT, PULL_UP = 1, 3, 2
        IRQ_RISING, IRQ_FALLING = 1, 2

        def __init__(self, pin, mode=-1, pull=-1):
            self.id = pin
            calls("Pin", pin, mode, pull)

        def init(self, mode=None, pull=-1):
            calls("Pin.init", self.id, mode, pull)

        def irq(self, handler=None, trigger=3):
            calls("Pin.irq", self.id, trigger, handler)

    machine.Pin = Pin

    if counter:
        class Counter:
            RISING, FALLING = 1, 2

            def __init__(self, unit, src, edge=RISING, filter_ns=0):
                calls("Counter", unit, src.id, edge, filter_ns)
                self.counted = 0

            def value(self, reset=None):
                calls("Counter.value", reset)
                n = self.counted
                if reset is not None:
                    self.counted = reset
                return n

        machine.Counter = Counter

    network = types.ModuleType("network")
    for i, name in enumerate(("STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD",
                              "STAT_NO_AP_FOUND", "STAT_GOT_IP", "STA_IF")):
        setattr(network, name, i)
    clock = FakeClock()
    fake_time = types.ModuleType("time")
    fake_time.gmtime = lambda t=0: (2000, 1, 1, 0, 0, 0, 5, 1)
    fake_time.time = lambda: 0
    fake_time.ticks_ms = clock.ticks_ms
    fake_time.ticks_us = clock.ticks_us
    fake_time.ticks_diff = clock.ticks_diff
    fake_time.ticks_add = clock.ticks_add
    fake_time.sleep_ms = clock.advance_ms
    return {"machine": machine, "network": network, "socket": types.ModuleType("socket"),
            "ssl": types.ModuleType("ssl"), "time": fake_time}


@pytest.fixture
def board(monkeypatch):
    """Returns (hal module, calls) for a board with or without machine.Counter."""

    def load(counter=True):
        calls = Calls()
        saved = dict(sys.modules)
        sys.modules.update(_fake_board(calls, counter))
        sys.modules.pop("firmware.hal.esp32", None)
        try:
            hal = importlib.import_module("firmware.hal.esp32")
        finally:
            for name in ("machine", "network", "socket", "ssl", "time", "firmware.hal.esp32"):
                if name in saved:
                    sys.modules[name] = saved[name]
                else:
                    sys.modules.pop(name, None)
        return hal, calls

    return load


def _handler(_pin):
    pass


def test_the_configured_pull_is_set_again_after_the_counter_and_the_irq_comes_last(board):
    # The PCNT driver turns the pull-up on when it takes the pin (docs/esp32.md): with
    # pulse_pull_up false the pin must end up floating, as configured, for an externally
    # pulled-up or push-pull pulse output.
    hal_mod, calls = board()
    hw = hal_mod.Hal().pulse_input(4, False, "falling", _handler, True)
    assert calls == [("Pin", 4, 1, None),
                     ("Counter", 0, 4, 2, 12000),
                     ("Pin.init", 4, None, None),
                     ("Pin.irq", 4, 2, _handler)]
    # Read and reset in one call: machine.Counter.value(0) zeroes with an offset, so no edge
    # between reading and zeroing is lost.
    hw._c.counted = 7
    del calls[:]
    assert hw.take() == 7 and hw.take() == 0
    assert calls == [("Counter.value", 0), ("Counter.value", 0)]


def test_a_pull_up_is_set_again_too_and_only_where_a_counter_took_the_pin(board):
    hal_mod, calls = board()
    hal_mod.Hal().pulse_input(5, True, "rising", _handler, True)
    assert calls == [("Pin", 5, 1, 2), ("Counter", 0, 5, 1, 12000), ("Pin.init", 5, None, 2),
                     ("Pin.irq", 5, 1, _handler)]
    for counter, use_hw in ((False, True), (True, False)):
        hal_mod, calls = board(counter)
        hw = hal_mod.Hal().pulse_input(4, False, "falling", _handler, use_hw)
        assert hw is None
        assert calls == [("Pin", 4, 1, None), ("Pin.irq", 4, 2, _handler)], (counter, use_hw)
