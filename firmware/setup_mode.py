# Setup mode: the meter's own Wi-Fi access point and the page a phone opens on it, run for one
# boot instead of the supervisor (firmware/startup.py setup_reason() says when; README: setting Wi-Fi from
# a phone).
#
# - Metering goes on. The reading pipeline is the normal one (built as firmware/wiring.py
#   builds it), served every step: the interrupt handler and the hardware counter count, and the index
#   reaches flash within persist_interval_s, as in every other state. Nothing is sent.
# - The access point is meter-<id>-setup, WPA2 with the meter's own setup_password. It closes
#   setup_timeout_s after the page was last used (and _MAX_OPEN_MS after it opened, whatever
#   happens), once new settings have worked, or once the configured network is back; each time
#   by a reset, so the next boot is a normal one and nothing of setup mode (microdot, the page,
#   the names they intern, which MicroPython never frees) stays in the heap.
# - The configured network is tried again every _RETRY_MS while nobody uses the page: a site
#   whose router was only down gets its meter back by itself. Not while the page is in use: a
#   join makes the radio search the channels, which a phone on the access point would notice.
# - One asyncio loop: the page server (firmware/setup_http.py) and step() every _STEP_MS (the
#   watchdog, the pipeline, the LED, the captive DNS answers, the joins, the timers).
# - Memory: no TLS context is made and nothing of umqtt, the supervisor or the link is loaded:
#   the page server has their room (README: benchmarks, setup mode).

import asyncio

from micropython import const

_STEP_MS = const(50)
_RETRY_MS = const(120000)  # the configured network, tried again this often...
_QUIET_MS = const(60000)  # ...once nobody has used the page for this long
_GRACE_MS = const(10000)  # after new settings worked: the phone's page sees it, then the reset
_MAX_OPEN_MS = const(3600000)
_SCAN_MS = const(10000)  # at most one scan this often ("Scan again")
_NETWORKS = const(20)  # networks listed, strongest first
_STATS_MS = const(30000)  # a log line: requests, DNS answers, pulses, heap


def firmware_version():
    # The one place setup mode reads the firmware's version from.
    try:
        from firmware import version  # pyright: ignore[reportAttributeAccessIssue]
        return version.VERSION
    except (ImportError, AttributeError):
        return "unknown"


def build(hal, log, store, cfg, why, payload=None):
    """Setup mode for this boot (firmware/entry.py runs its run_forever() and, on a crash,
    shutdown())."""
    # Every module first, on the heap as entry.py left it after the boot-only code, then the
    # objects. With microdot's names the table of interned names doubles (main.py), and its
    # next pool is one block of about 7 KB (5 KB on ESP32): an unfragmented heap has it, a
    # heap of objects made and dropped may not (it failed so, in the first request, in a heap
    # 8 KB larger than setup mode needs with this order: python -m bench.setup_heap).
    # One module at a time, each after a collection: an import leaves garbage (the file read,
    # dicts outgrown), and the heap collects only when it is full (entry.py sets the threshold
    # after build), so the modules' code used to spread over the whole heap with the garbage's
    # holes between them, and the page server found 24 KB free in holes of at most 800 bytes
    # (160 KB heap, micropython.mem_info(1)). Collected between imports, the next module fills
    # the last one's holes and the free heap stays in one piece at the top (README:
    # benchmarks, setup mode).
    import gc
    for mod in ("firmware.setup_http",  # microdot
                "firmware.setup_dns", "firmware.credentials",
                # The reading pipeline's modules (wiring.reading_pipeline imports them again,
                # already loaded).
                "firmware.backlog", "firmware.clock", "firmware.pipeline", "firmware.pulses",
                "firmware.telemetry", "firmware.led", "firmware.wiring", "firmware.setup_ssid",
                "firmware.setup_wifi", "firmware.hal.esp32_ap" if hal.name == "esp32"
                else "firmware.hal.unix_ap"):  # the access point is the HAL's, loaded only here
        __import__(mod)
        gc.collect()
        if mod == "firmware.setup_http":
            getattr(asyncio, "start_server")  # asyncio loads its stream and funcs parts when
            getattr(asyncio, "wait_for_ms")  # first asked: now, with the rest
            gc.collect()
    import random
    from binascii import hexlify
    from firmware.led import PATTERNS, StatusLed
    from firmware import wiring
    from firmware.setup_ssid import ap_ssid
    from firmware.setup_wifi import WifiSettings
    if hal.name == "esp32":
        from firmware.hal.esp32_ap import AccessPoint
    else:
        from firmware.hal.unix_ap import AccessPoint
    # The reading pipeline as firmware/wiring.py builds it for normal operation (the same
    # function), so that pulses are counted and the index kept as in every other state.
    pipeline = wiring.reading_pipeline(hal, log, store, cfg, payload, random.random)
    name = cfg["device_name"] or "meter-" + hexlify(hal.unique_id()).decode()
    # The LED pattern of setup mode (README: status LED patterns), added only here: in
    # firmware/led.py its name would be interned in normal operation too.
    PATTERNS["setup"] = (2000, 200, 200, 200)  # long on, one blink
    led = StatusLed(hal.led_setter(cfg["status_led_pin"], cfg["status_led_inverted"]),
                    hal.ticks_diff, log)
    ssid = ap_ssid(name)
    # Used once, here: out of the heap (1.9 KB on the 64-bit port) before the page server
    # needs it.
    del wiring, ap_ssid
    from firmware import unload
    unload("wiring", "setup_ssid")
    return SetupMode(hal, log, store, cfg, why, pipeline, led, name, AccessPoint(hal),
                     WifiSettings(hal, log), ssid)


class SetupMode:
    def __init__(self, hal, log, store, cfg, why, pipeline, led, name, ap, wifi, ssid):
        self.hal = hal
        self.log = log
        self._store = store
        self._cfg = cfg
        self.why = why
        self.pipeline = pipeline
        self._led = led
        self.name = name
        self.ssid = ssid  # the access point's (firmware/setup_ssid.py)
        self.configured = cfg["wifi_ssid"]  # None: config.json has no usable network
        self.timeout_ms = cfg["setup_timeout_s"] * 1000
        self.wifi = wifi  # firmware/setup_wifi.py
        self.networks = []  # (ssid, rssi, secured), strongest first
        self.state = None  # what the page shows about the meter (read once, at the start)
        self.user_join = False  # the join going on (or the last one) came from the page
        self.leaving_ms = None  # new settings worked: the reset is due
        self._retry_failed = None  # why the configured network did not join, last time
        self._opened_ms = self._used_ms = self._retry_ms = self._stats_ms = 0
        self._scan_ms = None
        self._portal = None
        self._dns = None
        self._ap = ap  # firmware/hal/esp32_ap.py, unix_ap.py

    def run_forever(self):
        asyncio.run(self._run())

    async def _run(self):
        from firmware.setup_dns import Dns
        from firmware.setup_http import Portal
        ip, http_port, dns_port = self.open()
        host = ip if http_port == 80 else "%s:%d" % (ip, http_port)
        self._dns = Dns(self._ap.socket, ip, dns_port, self.log)
        self._portal = Portal(self, self.log, host)
        await self._portal.start(ip, http_port)
        self.log.info("setup", "access point %s (WPA2) open, page at http://%s/; heap free %d",
                      self.ssid, host, self.hal.mem_free())
        while True:
            self.step()
            await asyncio.sleep_ms(_STEP_MS)

    def open(self):
        """The pipeline started, the access point open, a first scan: (ip, http port, dns
        port) for the page server and the DNS answers."""
        hal = self.hal
        now = hal.ticks_ms()
        self.pipeline.start(now)
        self.state = self._read_state()
        self._opened_ms = self._used_ms = self._retry_ms = self._stats_ms = now
        self._led.show("setup", now)
        self.log.warn("setup", "setup mode: %s", self.why)
        addr = self._ap.open(self.ssid, self._cfg["setup_password"])
        self.scan()
        return addr

    def step(self):
        hal = self.hal
        hal.wdt_feed()
        now = hal.ticks_ms()
        if self.pipeline._clock.tick(now):
            self.pipeline.tick(now)  # once a second, as the supervisor does
        self.pipeline.service(now)
        self._led.update(now)
        self._dns.serve()
        self._joined(self.wifi.poll(now), now)
        diff = hal.ticks_diff
        if self.leaving_ms is not None:
            if diff(now, self.leaving_ms) >= _GRACE_MS:
                self._leave("new Wi-Fi settings work")
            return
        if diff(now, self._used_ms) >= self.timeout_ms or \
                diff(now, self._opened_ms) >= _MAX_OPEN_MS:
            self._leave("closed after %d min without use" % (self.timeout_ms // 60000))
            return
        if self.configured is not None and self.wifi.trying is None and \
                diff(now, self._used_ms) >= _QUIET_MS and diff(now, self._retry_ms) >= _RETRY_MS:
            self._retry_ms = now
            self.user_join = False
            self.wifi.start(now, self.configured, self._cfg["wifi_password"])
        if diff(now, self._stats_ms) >= _STATS_MS:
            self._stats_ms = now
            p, d = self._portal, self._dns
            self.log.info("setup", "open %d s: %d requests (%d refused, %d bad), %d DNS answers "
                          "(%d dropped); pulse index %d; heap free %d",
                          diff(now, self._opened_ms) // 1000, p.requests, p.refused, p.bad,
                          d.answered, d.dropped, self.pipeline.pulses.index, hal.mem_free())

    def _joined(self, done, now):
        r = self.wifi.result
        if done is None or r is None:
            return
        worked, ssid, why = r
        if not self.user_join:
            if worked:
                self._leave("the configured network %s is back" % ssid)
                return
            self._retry_failed = why
            self.log.info("setup", "the configured network %s: %s", ssid, why)
        elif worked:
            self.log.info("setup", "joined %s with the new settings; config.json saved", ssid)
            self.leaving_ms = now
        else:
            self.log.warn("setup", "could not join %s (%s); the old settings are kept", ssid, why)

    def _leave(self, why):
        self.log.warn("setup", "leaving setup mode (%s): resetting", why)
        self.shutdown()
        self.hal.reset()

    def shutdown(self):
        """Before a reset: the index to flash, the access point off."""
        try:
            self.pipeline.shutdown()
        finally:
            if self._portal is not None:
                self._portal.close()
            if self._dns is not None:
                self._dns.close()
            self._ap.close()

    # --- what the page server asks (firmware/setup_http.py) ------------------------------------

    def touch(self):
        self._used_ms = self.hal.ticks_ms()

    def scan(self):
        """The networks in range, strongest first (at most one scan every _SCAN_MS)."""
        hal = self.hal
        now = hal.ticks_ms()
        if self.wifi.trying is not None or (
                self._scan_ms is not None and hal.ticks_diff(now, self._scan_ms) < _SCAN_MS):
            return  # the ESP32 cannot scan while it joins; the last list stands
        self._scan_ms = now
        best = {}
        for ssid, rssi, secured in self._ap.scan():
            if isinstance(ssid, bytes):
                try:
                    ssid = ssid.decode()
                except UnicodeError:
                    continue  # not a name config.json can hold
            if not ssid or [b for b in ssid.encode() if b < 32 or b == 127]:
                continue  # hidden, or with control characters
            if ssid not in best or best[ssid][0] < rssi:
                best[ssid] = (rssi, secured)
        nets = [(s, best[s][0], best[s][1]) for s in best]
        nets.sort(key=lambda n: -n[1])
        self.networks = nets[:_NETWORKS]

    def submit(self, ssid, password):
        """New settings from the page: [] when the join has started, else why not (the
        validator's lines, naming the field)."""
        if self.leaving_ms is not None:
            return ["new settings are already saved"]
        raw, errors = self.wifi.check(ssid, password)
        if errors:
            return errors
        self.user_join = True
        self.log.info("setup", "trying %s (from the page)", ssid)
        self.wifi.start(self.hal.ticks_ms(), ssid, password, raw)
        return []

    def energy_text(self):
        return self.pipeline.pulses.energy_text()

    def wifi_text(self):
        if self.configured is None:
            return "no network configured"
        w = self.wifi
        if w.trying is not None and not self.user_join:
            return "%s: trying again now" % self.configured
        if self._retry_failed is not None:
            return "%s: %s" % (self.configured, self._retry_failed)
        return "%s: not joined" % self.configured

    def _read_state(self):
        from firmware import credentials
        store = self._store
        creds = store.read("creds")
        err = store.read("lasterr")
        err = err.get("msg") if isinstance(err, dict) else None
        return {
            "version": firmware_version(),
            "provisioned": ("yes (%s)" % ("token" if creds["type"] == "ACCESS_TOKEN"
                                          else "MQTT basic")) if credentials.valid(creds)
            else "no",
            "attributes": "yes" if isinstance(store.read("attrs"), dict) else "no",
            "last_error": err if isinstance(err, str) else None,
        }
