# Hardware boundary for ESP32 boards running MicroPython >= 1.26 (machine.Counter).

import gc
import os
import time

import machine
import network
import socket
import ssl

# MicroPython counts time from 1970 or 2000, a build option (MICROPY_EPOCH_IS_1970); ThingsBoard
# wants Unix milliseconds. Told apart at import: docs/esp32.md, Clock and ticks.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
_EPOCH_OFFSET_MS = _EPOCH_OFFSET_S * 1000
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

    def epoch_ms(self, ms=None):
        """The RTC in Unix ms; epoch_ms(ms) sets it."""
        if ms is not None:
            # RTC.datetime() takes microseconds as its 8th field and calls settimeofday; the
            # weekday (4th) is ignored (ports/esp32/machine_rtc.c).
            s, ms = divmod(ms, 1000)
            tm = time.gmtime(s - _EPOCH_OFFSET_S)
            machine.RTC().datetime((tm[0], tm[1], tm[2], 0, tm[3], tm[4], tm[5], ms * 1000))
            return None
        # time_ns() is gettimeofday() in µs (ports/esp32/mphalport.c): monotonic between two
        # settimeofday() calls. It is a big int here (small ints end at 2**30), as the result
        # is: two objects of two heap blocks each, and a remainder freed at once, per timestamp.
        t = time.time_ns() // 1000000
        return t + _EPOCH_OFFSET_MS if _EPOCH_OFFSET_MS else t

    def ntp_time(self, host):
        """One SNTP exchange: the server's Unix ms (half the round trip added), or None. Sets
        nothing: firmware/sync.py checks the answer, then sets the RTC."""
        from firmware import sync
        ts = os.urandom(8)
        s = None
        try:
            addr = socket.getaddrinfo(host, 123)[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)  # ntptime waits as long
            t0 = time.ticks_us()
            s.sendto(sync.request(ts), addr)
            reply = s.recv(96)  # 48 bytes, more with extension fields: those are not read
            rtt = time.ticks_diff(time.ticks_us(), t0)
        except Exception:  # DNS, no route, timeout
            return None
        finally:
            if s is not None:
                s.close()
        t = sync.parse(reply, ts)
        return None if t is None else t + rtt // 2000

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
        pull = P.PULL_UP if pull_up else None
        # pull=None (no pull resistor) is documented for machine.Pin; the stubs say int only.
        p = P(pin, P.IN, pull)  # pyright: ignore[reportArgumentType]
        hw = None
        if use_hw and hasattr(machine, "Counter"):
            hw = _HwCounter(p, edge)
            # Setting the PCNT channel's pin up turns the internal pull-up on, whatever the Pin
            # was given (ESP-IDF's legacy driver, which machine.Counter goes through, does it in
            # pcnt_set_pin; the newer pulse_cnt driver does it too, and also disables the pin's
            # interrupt): docs/esp32.md, The pulse input. So the configured pull is set again
            # now, and the interrupt attached after. Neither touches the GPIO-matrix routing.
            p.init(pull=pull)  # pyright: ignore[reportArgumentType]
        p.irq(trigger=P.IRQ_FALLING if edge == "falling" else P.IRQ_RISING, handler=handler)
        self._pins.append(p)
        return hw

    def led_setter(self, pin, inverted):
        if pin is None:
            return None
        p = machine.Pin(pin, machine.Pin.OUT)
        self._pins.append(p)
        return (lambda on: p.value(not on)) if inverted else (lambda on: p.value(on))

    def boot_button_held(self, pin=0, hold_ms=3000):
        # A long press of BOOT (GPIO0 on most devkits) while powering up or within the first
        # seconds requests re-provisioning, as the power-cycle gesture does.
        if pin is None:
            return False
        b = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        start = time.ticks_ms()
        while b.value() == 0:
            if time.ticks_diff(time.ticks_ms(), start) >= hold_ms:
                return True
            time.sleep_ms(20)
        return False

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        machine.reset()
