"""firmware/hal/esp32.py against fake `network`, `machine` and `esp32` modules that behave as
MicroPython's ESP32 port does (ports/esp32/network_wlan.c, network_common.c, modmachine.c;
docs/esp32-board.md): Wi-Fi calls that raise, status reason codes, the reset cause, the IDF
heap, the BOOT button polled without waiting, the status LED created off."""

import importlib.util
import os
import sys
import time as _time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeWLAN:
    """network.WLAN(STA_IF) as the ESP32 port has it: one station object; ESP-IDF errors raise
    OSError with a text, unknown codes RuntimeError; status() is 1010/1001/1000 or the last
    disconnect reason."""

    def __init__(self):
        self.calls = []
        self.connect_error = None
        self.disconnect_error = None
        self.status_error = None
        self.isconnected_error = None
        self.code = 1000
        self.up = False

    def active(self, on=None):
        self.calls.append(("active", on))
        return True

    def connect(self, ssid, password):
        self.calls.append(("connect", ssid))
        if self.connect_error is not None:
            raise self.connect_error
        self.code = 1001

    def disconnect(self):
        self.calls.append(("disconnect",))
        if self.disconnect_error is not None:
            raise self.disconnect_error
        self.code = 1000  # WIFI_REASON_ASSOC_LEAVE reads as STAT_IDLE

    def isconnected(self):
        if self.isconnected_error is not None:
            raise self.isconnected_error
        return self.up

    def status(self, param=None):
        if self.status_error is not None:
            raise self.status_error
        if param == "rssi":
            if not self.up:
                raise OSError("Wifi Not Connected")
            return -61
        return self.code


class FakePin:
    IN, OUT, PULL_UP = 1, 3, 2
    IRQ_FALLING, IRQ_RISING = 2, 1
    made = []

    def __init__(self, pin, mode=None, pull=None, value=None):
        self.args = (pin, mode, pull, value)
        self.level = 1 if pull == self.PULL_UP else (value or 0)
        self.writes = []
        FakePin.made.append(self)

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        self.writes.append(self.level)


@pytest.fixture
def board(monkeypatch):
    wlan = FakeWLAN()
    network = types.ModuleType("network")
    network.STA_IF = 0
    network.WLAN = lambda iface: wlan
    for name, code in (("STAT_IDLE", 1000), ("STAT_CONNECTING", 1001), ("STAT_GOT_IP", 1010),
                       ("STAT_NO_AP_FOUND", 201), ("STAT_WRONG_PASSWORD", 202)):
        setattr(network, name, code)
    machine = types.ModuleType("machine")
    machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET = 1, 2, 3
    machine.DEEPSLEEP_RESET, machine.SOFT_RESET = 4, 5
    machine.cause = 1
    machine.reset_cause = lambda: machine.cause
    machine.Pin = FakePin
    FakePin.made = []
    esp32 = types.ModuleType("esp32")
    esp32.HEAP_DATA = 4
    esp32.idf_heap_info = lambda kind: [(120000, 61000, 32000, 20000), (40000, 9000, 9000, 100)]
    fake_time = types.ModuleType("time")
    fake_time.gmtime = _time.gmtime
    fake_time.slept = []
    fake_time.ticks_ms = lambda: 0
    fake_time.ticks_us = lambda: 0
    fake_time.ticks_diff = lambda a, b: a - b
    fake_time.ticks_add = lambda a, b: a + b
    fake_time.sleep_ms = fake_time.slept.append
    for name, mod in (("network", network), ("machine", machine), ("esp32", esp32)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "time", fake_time)
    spec = importlib.util.spec_from_file_location("esp32_hal_under_test",
                                                  os.path.join(ROOT, "firmware", "hal", "esp32.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "time", _time)  # pytest's own timing from here on
    return types.SimpleNamespace(hal=mod.Hal(), wlan=wlan, machine=machine, time=fake_time)


def test_connect_while_the_driver_is_still_connecting_raises_oserror_only(board):
    hal, wlan = board.hal, board.wlan
    wlan.connect_error = OSError("Wifi Internal Error")  # ESP_ERR_WIFI_CONN
    with pytest.raises(OSError, match="Wifi Internal Error"):
        hal.wifi_connect("site", "pw")
    wlan.connect_error = RuntimeError("Wifi Unknown Error 0x3001")  # a code MicroPython does not name
    with pytest.raises(OSError, match="Wifi Unknown Error 0x3001"):
        hal.wifi_connect("site", "pw")
    # The driver's own reconnect is ended first; a disconnect that raises is no reason to stop.
    wlan.connect_error = None
    wlan.disconnect_error = OSError("Wifi Not Started")
    hal.wifi_connect("site", "pw")
    assert wlan.calls[-2:] == [("disconnect",), ("connect", "site")]


def test_disconnect_connected_and_rssi_never_raise(board):
    hal, wlan = board.hal, board.wlan
    wlan.disconnect_error = RuntimeError("Wifi Unknown Error 0x3014")
    hal.wifi_disconnect()
    wlan.isconnected_error = OSError("Wifi Not Initialized")
    assert hal.wifi_connected() is False
    assert hal.wifi_rssi() is None  # not connected: status("rssi") raises on the board


@pytest.mark.parametrize("code, text", [
    (201, "access point not found"), (202, "wrong password"), (1001, "connecting"),
    (1000, "idle"), (1010, "connected"), (15, "4-way handshake timed out (wrong password?)"),
    (200, "beacon timeout: the access point went silent"),
    (204, "handshake timed out (wrong password?)"), (205, "connection failed"),
    (210, "no access point with a compatible security mode"), (77, "reason 77")])
def test_status_codes_are_named(board, code, text):
    board.wlan.code = code
    assert board.hal.wifi_status() == text


def test_status_that_raises_is_reported_not_raised(board):
    board.wlan.status_error = RuntimeError("Wifi Unknown Error 0x3001")
    assert board.hal.wifi_status() == "unknown (Wifi Unknown Error 0x3001)"


def test_the_reason_is_gone_after_disconnect_so_the_supervisor_reads_it_first(board):
    hal, wlan = board.hal, board.wlan
    hal.wifi_connect("site", "pw")
    wlan.code = 202
    before = hal.wifi_status()
    hal.wifi_disconnect()
    assert (before, hal.wifi_status()) == ("wrong password", "idle")


@pytest.mark.parametrize("cause, expected", [(1, 0), (2, 1), (5, 1), (4, 1), (3, 2), (0, 0)])
def test_reset_cause(board, cause, expected):
    # PWRON (and an unknown 0) is a power-up; HARD (machine.reset()), SOFT, DEEPSLEEP are
    # resets while powered; WDT is the watchdog.
    board.machine.cause = cause
    assert board.hal.reset_cause() == expected


def test_idf_heap_sums_free_and_finds_the_largest_block(board):
    assert board.hal.idf_heap() == (70000, 32000)


@pytest.mark.parametrize("inverted", [False, True])
def test_the_status_led_is_created_off(board, inverted):
    set_led = board.hal.led_setter(2, inverted)
    (pin,) = FakePin.made
    assert pin.args == (2, FakePin.OUT, None, 1 if inverted else 0)
    assert pin.level == (1 if inverted else 0)  # off: an inverted LED is lit by a low pin
    set_led(True)
    assert pin.level == (0 if inverted else 1)


def test_the_boot_button_is_read_without_waiting(board):
    hal = board.hal
    assert hal.boot_button_held(0) is False
    (pin,) = FakePin.made
    assert pin.args == (0, FakePin.IN, FakePin.PULL_UP, None)
    pin.level = 0  # pressed: GPIO0 to GND
    assert hal.boot_button_held(0) is True
    assert len(FakePin.made) == 1 and board.time.slept == []
    assert hal.boot_button_held(None) is False
