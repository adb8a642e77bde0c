# Board self-test for a technician at the bench: `make selftest PORT=... [SELFTEST_PIN=<gpio>]`
# (tools/deploy.py selftest) stops the meter through mpremote, runs main() on the board, then
# resets the board so the meter starts again. The meter never imports this module (main.py,
# firmware/entry.py, firmware/wiring.py): it stays on flash and costs no RAM in normal operation.
#
# Each check prints one line as soon as it is done: PASS, FAIL with what to do, or SKIP with
# why. The checks run the meter's own code: the ESP32 HAL (firmware/hal/esp32.py: wdt_start,
# pulse_input with PCNT and the GPIO interrupt, led_setter, wifi_*, ntp_time, epoch_ms, mem_free), the
# interrupt handler of firmware/pulses.py, the config and TLS context of firmware/startup.py.
# On any other port (the tests' fake board is the Unix port) only what is real there runs, the
# config and a TLS handshake over the host's network; the rest says SKIP, never a PASS it did
# not earn.
#
# The watchdog: once started, an ESP32 watchdog cannot be stopped, and the meter may have
# started it before mpremote stopped the meter (machine.WDT has no deinit there, and its task
# watchdog user stays registered across a soft reset; a second machine.WDT() only sets the
# timeout again: micropython/micropython : ports/esp32/machine_wdt.c). The test arms it with
# the meter's wdt_timeout_s (30 s at least), feeds it between and inside every step (each
# bounded well under that), and ends with the board's reset.

import gc
import sys
import time

from micropython import const

from firmware import version

_EDGES = const(20)  # pulses driven through the jumper
_EDGES_MS = const(10000)  # at most this long for them, whatever pulse_min_interval_ms is
_PULSE_ON_MS = const(5)  # far longer than PCNT's 12.8 us glitch filter
_BLINKS = const(5)
_WIFI_MS = const(30000)  # as the meter's join timeout (firmware/supervisor.py)
_TLS_TIMEOUT_S = const(10)  # per socket operation; the watchdog is fed before and after
# Free heap an ESP32 needs for the meter with .mpy files: the smallest heap it runs in is 108 KB
# (112 KB over TLS) on the 64-bit Unix port, about 77 (80) KB on a board at the 0.71 measured
# for a 32-bit build (README: benchmarks).
_HEAP_MIN = const(81920)
_NO_CONFIG = "needs a valid config.json (see config)"


def _pin_problem(cfg, pin):
    """Why pin cannot drive the jumper, or None (the classic ESP32's pins: the pinned release)."""
    if pin == cfg["pulse_pin"]:
        return "is pulse_pin itself: the jumper goes from another, free GPIO to GPIO %d" % pin
    if pin == cfg["status_led_pin"] or pin == cfg["boot_button_pin"]:
        return "is the status LED or the BOOT button (status_led_pin, boot_button_pin): use a free GPIO"
    if 6 <= pin <= 11:
        return "is wired to the flash chip on an ESP32 (GPIO 6 to 11): driving it stops the board"
    if 34 <= pin <= 39:
        return "is input-only on an ESP32 (GPIO 34 to 39): it cannot drive the jumper"
    if pin < 0 or pin > 39:
        return "is not a GPIO of an ESP32 (0 to 39)"
    return None


class SelfTest:
    def __init__(self, hal, out, test_pin=None, heap_free=None):
        # hal: firmware.hal.esp32.Hal on a board, None on another port; out: print
        self.hal = hal
        self._out = out
        self.test_pin = test_pin
        self.heap_free = heap_free
        self.port = hal.name if hal is not None else sys.platform
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        self.cfg = None
        self.tls = None
        self.errors = []
        self.usable = False  # the pins and Wi-Fi fields can be trusted
        self.joined = False
        self._pulses = None
        self._hw = None

    def say(self, verdict, check, text):
        self.counts[verdict] += 1
        self._out("%s  %-9s %s" % (verdict, check, text))

    def _feed(self):
        if self.hal is not None:
            self.hal.wdt_feed()

    def _sleep(self, ms):
        self.hal.sleep_ms(ms)
        self.hal.wdt_feed()

    def run(self):
        self._out("self-test: %s %s on %s, MicroPython %s" % (
            version.TITLE, version.VERSION, self.port,
            ".".join(str(v) for v in sys.implementation.version[:3])))
        for name, step in (("config", self.check_config), ("heap", self.check_heap),
                           ("watchdog", self.check_watchdog), ("counter", self.check_counter),
                           ("pulses", self.check_pulses), ("led", self.check_led),
                           ("wifi", self.check_wifi), ("ntp", self.check_ntp),
                           ("tls", self.check_tls)):
            try:
                step(name)
            except Exception as e:  # one broken check must not hide the others
                self.say("FAIL", name, "unexpected %s: %s: report it to the maintainers with this "
                         "output" % (type(e).__name__, e))
            self._feed()
        c = self.counts
        self._out("self-test: %d PASS, %d FAIL, %d SKIP" % (c["PASS"], c["FAIL"], c["SKIP"]))
        return c

    # --- the checks, in order ------------------------------------------------------------------

    def check_config(self, name):
        from firmware import startup
        ssl = self.hal.ssl if self.hal is not None else __import__("ssl")
        cfg, self.tls, self.errors = startup.load_config(ssl)  # the boot's own reading
        self.cfg = cfg
        self.usable = cfg is not None and all(e.startswith("tb_ca:") for e in self.errors)
        if self.errors:
            self.say("FAIL", name, "%s: fix config.json (tools/meterconfig.py) and make deploy"
                     % "; ".join(self.errors))
            return
        self.say("PASS", name, "config.json valid: %s, pulse pin %d (%s edge, %d per kWh), %s to "
                 "%s:%d" % (cfg["device_name"] or "meter-<MAC>", cfg["pulse_pin"],
                            cfg["pulse_edge"], cfg["pulses_per_kwh"],
                            "TLS" if cfg["tb_tls"] else "PLAIN MQTT", cfg["tb_host"],
                            cfg["tb_port"]))

    def check_heap(self, name):
        free = self.heap_free
        if self.hal is None:
            self.say("SKIP", name, "%d bytes free; the %d-byte minimum is an ESP32's (objects on "
                     "the %s port are larger)" % (free or 0, _HEAP_MIN, self.port))
        elif free >= _HEAP_MIN:
            self.say("PASS", name, "%d bytes free at the prompt, the self-test loaded (the meter "
                     "needs about 80 KB over TLS)" % free)
        else:
            self.say("FAIL", name, "%d bytes free, below %d: this MicroPython build leaves too "
                     "little heap for the meter: flash the pinned release (make flash), or "
                     "freeze the firmware into the image (manifest.py)" % (free, _HEAP_MIN))

    def check_watchdog(self, name):
        if self.hal is None:
            self.say("SKIP", name, "no hardware watchdog on the %s port" % self.port)
            return
        timeout_s = self.cfg["wdt_timeout_s"] if self.usable else 120  # as firmware/entry.py
        try:
            self.hal.wdt_start(timeout_s * 1000)
        except Exception as e:
            self.say("FAIL", name, "machine.WDT refused %d s (%s: %s): flash the pinned release "
                     "(make flash)" % (timeout_s, type(e).__name__, e))
            return
        self.say("PASS", name, "armed for %d s (wdt_timeout_s) and fed through the test; an ESP32 "
                 "watchdog cannot be stopped: the board resets at the end" % timeout_s)

    def check_counter(self, name):
        if not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
            return
        if self.hal is None:
            self.say("SKIP", name, "no PCNT on the %s port: this is an ESP32 check" % self.port)
            return
        from firmware.pulses import PulseCounter
        cfg, hal = self.cfg, self.hal
        # The handler on its own (no hw counter attached): service() then returns its count,
        # to be compared with what PCNT counted.
        self._pulses = PulseCounter(hal.ticks_us, hal.ticks_diff, cfg["pulses_per_kwh"],
                                    cfg["pulse_min_interval_ms"], cfg["zero_power_timeout_s"])
        self._hw = hal.pulse_input(cfg["pulse_pin"], cfg["pulse_pull_up"], cfg["pulse_edge"],
                                   self._pulses.edge, True)
        if self._hw is None:
            self.say("FAIL", name, "this MicroPython has no machine.Counter: energy would rest on "
                     "the interrupt handler alone, which loses pulses while the meter is busy "
                     "(TLS, flash writes): flash the pinned release (make flash)")
        else:
            self.say("PASS", name, "machine.Counter (PCNT) counts GPIO %d in hardware%s" % (
                cfg["pulse_pin"], "; pulse_hw_counter is off in config.json, so the meter will "
                "not use it" if cfg["pulse_hw_counter"] == "off" else ""))

    def check_pulses(self, name):
        cfg, pin = self.cfg, self.test_pin
        if not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
            return
        if pin is None:
            self.say("SKIP", name, "no SELFTEST_PIN: connect a jumper wire from a free GPIO to "
                     "GPIO %d (pulse_pin), then make selftest PORT=... SELFTEST_PIN=<that GPIO>"
                     % cfg["pulse_pin"])
            return
        why = _pin_problem(cfg, pin)
        if why is not None:
            self.say("FAIL", name, "SELFTEST_PIN=%d %s" % (pin, why))
            return
        if self.hal is None or self._pulses is None:
            self.say("SKIP", name, "no GPIO on the %s port: this is an ESP32 check" % self.port)
            return
        hal, pc, hw = self.hal, self._pulses, self._hw
        drive = hal.led_setter(pin, False)  # a plain push-pull output: the LED's driver is one
        active = cfg["pulse_edge"] == "rising"  # the level a counted edge leads to
        drive(not active)
        self._sleep(20)
        pc.service(hal.ticks_ms())  # whatever setting up the pins produced
        if hw is not None:
            hw.take()
        rejected = pc.rejected
        gap = cfg["pulse_min_interval_ms"] + 10  # every counted edge passes the debounce
        n = max(3, min(_EDGES, _EDGES_MS // (gap + _PULSE_ON_MS)))
        for _ in range(n):
            drive(active)
            self._sleep(_PULSE_ON_MS)
            drive(not active)
            self._sleep(gap)
        self._sleep(50)  # the scheduled handlers run while the main task sleeps
        seen = pc.service(hal.ticks_ms())
        counted = hw.take() if hw is not None else None
        rejected = pc.rejected - rejected
        where = "%d pulses driven from GPIO %d to GPIO %d" % (n, pin, cfg["pulse_pin"])
        if seen == n and counted in (None, n):
            if counted is None:
                self.say("PASS", name, "%s: the interrupt handler counted %d (no PCNT to compare: "
                         "see counter)" % (where, seen))
            else:
                self.say("PASS", name, "%s: PCNT counted %d, the interrupt handler %d"
                         % (where, counted, seen))
        elif not seen and not counted:
            self.say("FAIL", name, "%s: no edge arrived: connect the jumper wire between them "
                     "(check pulse_pin) and disconnect the meter's S0 wires for the test" % where)
        else:
            self.say("FAIL", name, "%s: PCNT counted %s, the interrupt handler %d (%d debounced): "
                     "a meter's S0 output still connected, or a loose or long jumper: fix it "
                     "and run again; if it repeats, report it with this output"
                     % (where, "-" if counted is None else counted, seen, rejected))

    def check_led(self, name):
        cfg = self.cfg
        if not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
        elif cfg["status_led_pin"] is None:
            self.say("SKIP", name, "no status_led_pin in config.json: the board shows no status")
        elif self.hal is None:
            self.say("SKIP", name, "no GPIO on the %s port: this is an ESP32 check" % self.port)
        else:
            pin = cfg["status_led_pin"]
            led = self.hal.led_setter(pin, cfg["status_led_inverted"])
            for _ in range(_BLINKS):
                led(True)
                self._sleep(200)
                led(False)
                self._sleep(200)
            self.say("PASS", name, "GPIO %d blinked %d times: look at the LED; if it stayed dark, "
                     "check status_led_pin (most boards: 2) and status_led_inverted" % (pin, _BLINKS))

    def check_wifi(self, name):
        cfg, hal = self.cfg, self.hal
        if not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
            return
        if hal is None:
            self.say("SKIP", name, "no radio on the %s port (it uses the host's network)" % self.port)
            return
        start = hal.ticks_ms()
        hal.wifi_connect(cfg["wifi_ssid"], cfg["wifi_password"])
        while not hal.wifi_connected():
            if hal.ticks_diff(hal.ticks_ms(), start) >= _WIFI_MS:
                status = hal.wifi_status()
                hal.wifi_disconnect()
                self.say("FAIL", name, "could not join %s within %d s (%s): check wifi_ssid and "
                         "wifi_password; the ESP32 needs a 2.4 GHz network in range"
                         % (cfg["wifi_ssid"], _WIFI_MS // 1000, status))
                return
            self._sleep(250)
        self.joined = True
        ms = hal.ticks_diff(hal.ticks_ms(), start)
        rssi = hal.wifi_rssi()
        self.say("PASS", name, "joined %s in %d.%d s%s" % (
            cfg["wifi_ssid"], ms // 1000, ms % 1000 // 100, "" if rssi is None else
            ", RSSI %d dBm%s" % (rssi, " (weak: move the board or add an antenna)"
                                 if rssi < -80 else "")))

    def check_ntp(self, name):
        cfg, hal = self.cfg, self.hal
        if not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
        elif hal is None:
            self.say("SKIP", name, "the %s port keeps the host's clock: ntp_time is the ESP32 "
                     "HAL's" % self.port)
        elif not self.joined:
            self.say("SKIP", name, "needs Wi-Fi (see wifi)")
        elif self._ntp(hal, cfg["ntp_host"]):
            self.say("PASS", name, "%s answered: %04d-%02d-%02d %02d:%02d:%02d UTC"
                     % ((cfg["ntp_host"],) + tuple(time.gmtime(self._ntp_s)[:6])))
        else:
            self.say("FAIL", name, "no answer from %s: UDP port 123 blocked? set ntp_host to the "
                     "site's time server; without the time, readings carry the server's time "
                     "and TLS cannot check certificate dates" % cfg["ntp_host"])

    def _ntp(self, hal, host):
        # The meter's own exchange and date bounds (firmware/sync.py): an answer outside the dates a
        # meter can be at is no answer. The RTC is set from it, as the meter does, so the TLS
        # check after this one can check the certificate's dates.
        t = hal.ntp_time(host)
        if t is None or not 1735689600000 <= t < 4102444800000:  # sync.py's 2025..2100
            return False
        hal.epoch_ms(t)
        # time.gmtime counts from 2000 on some ports (the HAL's epoch offset): from the port's
        # own clock, just set, rather than from the Unix seconds.
        self._ntp_s = time.time()
        return True

    def check_tls(self, name):
        cfg, hal = self.cfg, self.hal
        if cfg is None or not self.usable:
            self.say("SKIP", name, _NO_CONFIG)
            return
        if not cfg["tb_tls"]:
            self.say("SKIP", name, "tb_tls is off (plain MQTT): no certificate to verify")
            return
        if self.tls is None:
            self.say("FAIL", name, "no TLS context (see config): deploy the CA of the server's "
                     "certificate as DER: make deploy ... CA=<file>")
            return
        if hal is not None and not self.joined:
            self.say("SKIP", name, "needs Wi-Fi (see wifi)")
            return
        from firmware.link import describe
        sockmod = hal.socket if hal is not None else __import__("socket")
        host, port = cfg["tb_host"], cfg["tb_port"]
        s = None
        try:
            # As umqtt.simple connects (firmware/link.py), with the boot's own TLS context: the
            # chain must end at a root in tb_ca and the certificate must name tb_host.
            addr = sockmod.getaddrinfo(host, port)[0][-1]
            s = sockmod.socket()
            s.settimeout(_TLS_TIMEOUT_S)
            s.connect(addr)
            self._feed()
            s = self.tls.wrap_socket(s, server_hostname=host)
        except Exception as e:
            why = describe(e)
            self.say("FAIL", name, "%s:%d: %s: %s" % (host, port, why, (
                "deploy the CA the server's chain ends at (make deploy ... CA=<DER file>), set "
                "tb_host to the name in its certificate, check the clock (ntp)"
                if why.startswith("TLS") else "check tb_host and tb_port, and that the site lets "
                "the board reach port %d" % port)))
            return
        finally:
            if s is not None:
                s.close()
        self.say("PASS", name, "%s:%d: certificate chain and host name verified with %s"
                 % (host, port, cfg["tb_ca"]))


def main(test_pin=None):
    """Run every check on this board and print the report (mpremote shows it)."""
    gc.collect()
    free = gc.mem_free()  # before the HAL and the checks load anything more
    hal = None
    if sys.platform == "esp32":
        from firmware.hal.esp32 import Hal
        hal = Hal()
    return SelfTest(hal, print, test_pin, free).run()
