# Hardware boundary for ESP32 boards running MicroPython >= 1.26 (machine.Counter).

import gc
import os
import time

import esp32
import machine
import network
import socket
import ssl

# MicroPython counts time from 1970 or 2000, a build option (MICROPY_EPOCH_IS_1970); ThingsBoard
# wants Unix milliseconds. Told apart at import: docs/esp32.md, Clock and ticks.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
_EPOCH_OFFSET_MS = _EPOCH_OFFSET_S * 1000
# WLAN.status() on the station (ports/esp32/network_wlan.c, docs/esp32-board.md §2): 1010 with
# an address, 1001 while a requested join goes on, 1000 idle (and after disconnect()); else the
# last disconnect reason of ESP-IDF (wifi_err_reason_t), of which MicroPython folds 205 into
# 202 and names only a few (STAT_*). The ones a meter in the field meets are named here.
_WIFI_STATUS = {
    1000: "idle",
    1001: "connecting",
    1010: "connected",
    201: "access point not found",
    202: "wrong password",
    200: "beacon timeout: the access point went silent",
    203: "association refused by the access point",
    204: "handshake timed out (wrong password?)",
    15: "4-way handshake timed out (wrong password?)",
    14: "message integrity failure (wrong password?)",
    205: "connection failed",
    2: "authentication expired",
    4: "disconnected for inactivity",
    8: "left the network",
    23: "802.1X authentication failed",
    210: "no access point with a compatible security mode",
    211: "access point security below the threshold",
    212: "access point signal below the threshold",
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

    # Wi-Fi: ESP-IDF errors come back as OSError ("Wifi Internal Error" for ESP_ERR_WIFI_CONN,
    # e.g. connect() while the driver is still on its own reconnect) or, for codes MicroPython
    # does not name, RuntimeError ("Wifi Unknown Error 0x...") (ports/esp32/network_common.c).
    # Here every call either works or raises OSError; status and RSSI never raise.
    def _wifi(self):
        if self._wlan is None:
            w = network.WLAN(network.STA_IF)
            w.active(True)
            self._wlan = w
        return self._wlan

    def wifi_connect(self, ssid, password):
        try:
            w = self._wifi()
            try:
                w.disconnect()  # ends the driver's own reconnect, which would refuse connect()
            except OSError:
                pass
            w.connect(ssid, password)
        except RuntimeError as e:
            raise OSError(str(e))

    def wifi_disconnect(self):
        try:
            self._wifi().disconnect()
        except Exception:  # OSError, RuntimeError: nothing to undo
            pass

    def wifi_connected(self):
        try:
            return self._wifi().isconnected()
        except Exception:
            return False

    def wifi_status(self):
        # Read it before disconnect(): that replaces the reason with "idle".
        try:
            s = self._wifi().status()
        except Exception as e:
            return "unknown (%s)" % e
        return _WIFI_STATUS.get(s, "reason %s" % s)

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
        # Created off: Pin(OUT) alone drives the pin low, which lights an LED wired to 3V3
        # (inverted) from here until the first pattern update.
        p = machine.Pin(pin, machine.Pin.OUT, value=1 if inverted else 0)
        self._pins.append(p)
        return (lambda on: p.value(not on)) if inverted else (lambda on: p.value(on))

    def boot_button_held(self, pin=0):
        # Is the BOOT button (GPIO0 on most devkits, to GND) down now? Never waits: the
        # main loop times the press (firmware/setup_request.py); held while power comes on,
        # GPIO0 starts the ROM loader instead of this firmware.
        if pin is None:
            return False
        b = self._button
        if b is None:
            b = self._button = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        return b.value() == 0

    def reset_cause(self):
        # 0: power was applied (or EN, which on the ESP32 is a power-on reset; a brownout);
        # 1: a reset while powered: machine.reset() (entry.py's after a crash, a planned one), a
        # panic; 2: the watchdog. machine.reset_cause() maps esp_reset_reason() onto these
        # (docs/esp32-board.md §1); an unknown cause counts as a power-up, never as a crash.
        c = machine.reset_cause()
        if c == machine.WDT_RESET:
            return 2
        if c in (machine.HARD_RESET, machine.SOFT_RESET, machine.DEEPSLEEP_RESET):
            return 1
        return 0

    def idf_heap(self):
        # gc.mem_free() counts the MicroPython heap, which grows from the IDF heap; TLS
        # buffers and Wi-Fi come from the IDF heap itself. (free bytes, largest free block)
        # over its data regions.
        free = big = 0
        for region in esp32.idf_heap_info(esp32.HEAP_DATA):  # (total, free, largest, min free)
            free += region[1]
            if region[2] > big:
                big = region[2]
        return free, big

    def wdt_start(self, timeout_ms):
        # Once started it cannot be stopped (MicroPython's machine.WDT); calling it again
        # reconfigures the timeout on ESP-IDF 5 builds and raises OSError on older ones
        # (docs/esp32-board.md §3).
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        machine.reset()
