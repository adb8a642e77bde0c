# Hardware boundary for ESP32 boards running MicroPython >= 1.26 (machine.Counter).

import gc
import time

import machine
import network
import socket
import ssl

# ESP32 builds count time from 2000-01-01 or 1970-01-01 depending on version; ThingsBoard
# wants Unix milliseconds.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
_WIFI_STATUS = {
    network.STAT_IDLE: "idle",
    network.STAT_CONNECTING: "connecting",
    network.STAT_WRONG_PASSWORD: "wrong password",
    network.STAT_NO_AP_FOUND: "access point not found",
    network.STAT_GOT_IP: "connected",
}


class _HwCounter:
    # PCNT via machine.Counter: counts edges in hardware while Python is busy.
    def __init__(self, pin, edge):
        C = machine.Counter
        # filter_ns: the longest glitch filter PCNT has (1023 APB ticks, ~12.8 µs); real
        # meter pulses last milliseconds.
        self._c = C(0, pin, edge=C.FALLING if edge == "falling" else C.RISING, filter_ns=12000)

    def take(self):
        return self._c.value(0)  # read and reset atomically (offset-based in the driver)


class Hal:
    name = "esp32"
    socket = socket
    ssl = ssl

    def __init__(self):
        self.ticks_ms = time.ticks_ms
        self.ticks_us = time.ticks_us
        self.ticks_diff = time.ticks_diff
        self.ticks_add = time.ticks_add
        self.sleep_ms = time.sleep_ms  # scheduled pin handlers run while sleeping
        self._wlan = None
        self._wdt = None
        self._button = None
        self._pins = []  # keep Pin objects with IRQs alive

    def mount(self):
        pass  # the board's LittleFS is already mounted at /

    def unique_id(self):
        return machine.unique_id()

    def mem_free(self):
        gc.collect()  # free heap means reachable data only, not garbage awaiting collection
        return gc.mem_free()

    def epoch_ms(self):
        # The stubs make ticks opaque (they wrap); only the sub-second remainder is used here.
        return (time.time() + _EPOCH_OFFSET_S) * 1000 + time.ticks_ms() % 1000  # pyright: ignore[reportOperatorIssue]

    def sync_time(self, host):
        import ntptime
        ntptime.host = host
        try:
            ntptime.settime()  # sets the RTC in UTC
            return True
        except Exception:
            return False

    def _wifi(self):
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
        return self._wlan

    def wifi_connect(self, ssid, password):
        w = self._wifi()
        try:
            w.disconnect()  # a stale attempt blocks a new one on some IDF versions
        except OSError:
            pass
        w.connect(ssid, password)

    def wifi_disconnect(self):
        try:
            self._wifi().disconnect()
        except OSError:
            pass

    def wifi_connected(self):
        return self._wifi().isconnected()

    def wifi_status(self):
        s = self._wifi().status()
        return _WIFI_STATUS.get(s, "status %s" % s)

    def wifi_rssi(self):
        try:
            return self._wifi().status("rssi")
        except Exception:
            return None

    def pulse_input(self, pin, pull_up, edge, handler, use_hw):
        P = machine.Pin
        # pull=None (no pull resistor) is documented for machine.Pin; the stubs say int only.
        p = P(pin, P.IN, P.PULL_UP if pull_up else None)  # pyright: ignore[reportArgumentType]
        p.irq(trigger=P.IRQ_FALLING if edge == "falling" else P.IRQ_RISING, handler=handler)
        self._pins.append(p)
        if use_hw and hasattr(machine, "Counter"):
            return _HwCounter(p, edge)
        return None

    def led_setter(self, pin, inverted):
        if pin is None:
            return None
        p = machine.Pin(pin, machine.Pin.OUT)
        self._pins.append(p)
        return (lambda on: p.value(not on)) if inverted else (lambda on: p.value(on))

    def boot_button_held(self, pin=0):
        # Is the BOOT button (GPIO0 on most devkits, to GND) down now? Never waits: the
        # supervisor times the press from the main loop.
        if pin is None:
            return False
        b = self._button
        if b is None:
            b = self._button = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        return b.value() == 0

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        machine.reset()
