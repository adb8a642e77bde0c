# The meter's supervisor: boot states, connection states and the main loop.
#
#   wifi -> time -> [provision] -> connect -> [attributes] -> run
#     ^        |          |             |            |          |
#     +--------+----------+-------------+------------+----------+  failure: jittered backoff
#
# One loop, never blocked for long: each step() lets the reading pipeline drain the pulse
# counter, take readings and persist the index (firmware/pipeline.py), drives the LED and the
# power-cycle gesture, and advances the connection state only when its backoff timer has
# expired. Pulses are counted from the first step on, whatever the network does. Blocking calls
# (DNS, TCP, TLS, MQTT) are bounded by the link's deadlines; the hardware counter and the
# interrupt handler keep counting through them.
#
# Re-provisioning rules (docs/thingsboard.md §1, §2.8):
# - provision only when no credentials are stored, the stored ones were refused with CONNACK 5
#   (or 2), or the technician's gesture asked for it; never on DNS/socket errors, timeouts or
#   CONNACK 3;
# - a credential is replaced only by one the platform just issued (SUCCESS) or by the configured
#   device token after it was accepted (CONNACK 0); FAILURE and NOT_FOUND keep what we have;
# - working credentials are never stranded: issued ones are stored with the working ones beside
#   them ("working") until a CONNACK 0 proves them, and a refused device token or refused issued
#   credentials send the meter straight back to the working ones;
# - NOT_FOUND and FAILURE with no way forward are retried slowly (retry_slow_s), never hammered.
#
# No storm, whatever the server answers: every way back to an earlier state waits the jittered
# backoff (Wi-Fi joins and NTP have their own, _join), and only a PUBACK resets it. A SUCCESS
# does not: a server that issues credentials and then refuses them (CONNACK 5) gets one
# provision -> connect round, and one credential write, per backoff delay.
# The provisioning exchange itself, and what a refused CONNECT means for the credentials, live
# in firmware/provision.py, loaded only while needed (never during a device session); it
# returns a decision (firmware/states.py) that _step_provision() and, for a refused CONNECT,
# firmware/connecting.py apply. The connect and attributes states live in
# firmware/connecting.py, loaded for their steps only (memory: the heap's high point is the
# provisioning connect, which needs none of their code). They are this class's in a file of
# their own: they change its fields only through its methods, and what a CONNACK says about
# the credentials comes back from connect() for _advance() to apply. No other module writes
# this object's fields (firmware/setup_request.py returns what it decided as well; the unit
# test tests/unit/test_ownership.py holds every module to it).

import gc

from micropython import const

from firmware import attributes, credentials, unload
from firmware.backoff import Backoff
from firmware.link import LinkError
from firmware.states import (ATTRIBUTES, CONNECT, KEEP_WORKING, NEW_CREDENTIALS, NO_DECISION,
                             PROVISION, REFUSED, RUN, TIME, TRY_TOKEN, WIFI)

_LOOP_MS = const(50)
_WIFI_JOIN_MS = const(30000)
_WIFI_POLL_MS = const(250)
_HEALTHY_S = const(3600)
_ERROR_RECORD = const("lasterr")
_ERROR_SAVE_S = const(60)
_CREDS_RECORD = const("creds")
_CREDS_TRIES = const(3)  # writes of new credentials before they live in RAM only
_CREDS_PAUSE_MS = const(200)  # between them: a brownout or a busy chip may pass


class Supervisor:
    def __init__(self, hal, cfg, store, link, pipeline, clock, log, rand, device_name,
                 tls=None, gesture=None, led=None, on_healthy=None):
        self.hal = hal
        self.cfg = cfg
        self.store = store
        self.link = link
        self.pipeline = pipeline
        self._clock = clock
        self.log = log
        self.device_name = device_name
        self.tls = tls
        self._gesture = gesture
        self._led = led
        # RPC and the shared attribute (firmware/remote.py): loaded for each session once the
        # CONNACK is in, unloaded when the session ends (never resident while provisioning).
        self.remote = None
        self._acted = False  # what remote.py remembers across sessions (its _acted)
        self._on_healthy = on_healthy  # called once after an hour of running (crash counter)
        self._marker = attributes.AttributeMarker(store)
        self._backoff = Backoff(cfg["retry_min_s"] * 1000, cfg["retry_max_s"] * 1000, rand)
        # Wi-Fi joins and NTP: local failures that say nothing about the server, kept apart so
        # a join neither resets nor inflates the server's backoff.
        self._join = Backoff(cfg["retry_min_s"] * 1000, cfg["retry_max_s"] * 1000, rand)
        self._slow = Backoff(cfg["retry_slow_s"] * 1000, cfg["retry_slow_s"] * 4000, rand)
        self.state = None
        self.creds = None
        self._candidate = None  # the configured device token, tried once after FAILURE
        self._rejected = False  # the stored credentials got CONNACK 5 this boot
        self._reprovision = False  # gesture or RPC: provision once more
        self._gesture_tries = 0
        self._next_ms = 0
        self._wifi_since = None
        self._time_fails = 0
        self._saved_error = None
        self._error_s = None  # uptime s of the last save (or flush attempt)
        # Setup mode (firmware/setup_request.py): Wi-Fi failing for too long, the BOOT button.
        self._wifi_failing = None  # ticks_ms of the first join since Wi-Fi last worked
        self._held = None  # the BOOT button's press: ticks_ms when it began, None, False

    # --- boot ----------------------------------------------------------------------------------

    def start(self):
        hal = self.hal
        now = hal.ticks_ms()
        self.pipeline.start(now)
        # Ready credentials in config.json (cfg["credentials"], firmware/config.py) are the
        # credentials, whatever the flash holds from an earlier life: never provisioned.
        creds = self.cfg.get("credentials") or self.store.read(_CREDS_RECORD)
        self.creds = creds if credentials.valid(creds) else None
        # Only a power-up counts toward the gesture: a reset the firmware made (a crash's,
        # a planned one) or the watchdog's is not the technician's hand (firmware/hal).
        cause = hal.reset_cause()
        if self._gesture and self._gesture.boot(now, cause == 0):
            self.request_reprovision("power-cycle gesture")
        self.log.info("boot", "device %s, %s, %s, pulse index %d, %s", self.device_name,
                       ("after power-up", "after a reset", "after a watchdog reset")[cause],
                       "credentials stored (%s)" % credentials.describe(self.creds)
                       if self.creds else "no credentials", self.pipeline.pulses.index,
                       "TLS to %s:%d" % (self.cfg["tb_host"], self.cfg["tb_port"]) if self.tls
                       else "PLAIN MQTT to %s:%d" % (self.cfg["tb_host"], self.cfg["tb_port"]))
        if self.tls is None:
            self.log.warn("boot", "TLS is off (tb_plain_ok): credentials travel in clear text")
        self._goto(WIFI)

    # --- main loop -----------------------------------------------------------------------------

    def run_forever(self):
        self.start()
        while True:
            self.step()
            # Pulses are counted by the interrupt handler and the hardware counter while this
            # sleeps; the loop only needs to be quick enough for the LED (50 ms blips).
            self.pipeline.pulses.idle()  # handlers run on time from here: the step is timed
            self.hal.sleep_ms(_LOOP_MS)

    def step(self):
        hal = self.hal
        hal.wdt_feed()
        now = hal.ticks_ms()
        clock = self._clock
        if clock.tick(now):
            self.pipeline.tick(now)  # once a second
        self.pipeline.service(now)
        g = self._gesture
        if g is not None:
            g.tick(now)
            if not (g._armed or g.requested):
                # The power-up window is over and nothing is asked: out of the heap until a
                # request (RPC, BOOT button) needs it again (request_reprovision).
                self._gesture = None
                unload("gesture")
        pin = self.cfg["boot_button_pin"]
        if pin is not None and (self._held is not None or hal.boot_button_held(pin)):
            from firmware import setup_request  # re-provision (3 s) or setup mode (10 s)
            self._held = setup_request.step(self, now)
        if self._led is not None:
            self._led.update(now)
        self._persist_error()
        # Checked every step, and every delay is shorter than the 6.2 days ticks_diff can span
        # on the board (the longest, retry_slow_s x 4, is 4 days). In the run state _next_ms is
        # left behind: nothing reads it there, and leaving the state sets it afresh.
        if hal.ticks_diff(now, self._next_ms) >= 0:
            self._advance(now)
        if self.state == RUN:
            self._run(now)
        # Re-synced every ntp_interval_s, in the run state and while waiting for the server.
        # (Two comparisons, not `not in (WIFI, TIME)`: that tuple would be built every step.)
        if self.state != WIFI and self.state != TIME and clock.sync_due() and \
                hal.wifi_connected():
            clock.sync()

    def _goto(self, state, delay_ms=0):
        # Timers start from the clock *now*: the step that decided this may have blocked for
        # seconds (DNS, TLS, a provisioning exchange).
        if state != self.state:
            self.log.info("state", "%s -> %s%s", self.state or "boot", state,
                           " in %d.%ds" % (delay_ms // 1000, delay_ms % 1000 // 100) if delay_ms else "")
            self.state = state
            if state == TIME:
                self._time_fails = 0  # NTP attempts since the time state was entered
        self._next_ms = self.hal.ticks_add(self.hal.ticks_ms(), delay_ms)
        self._show("wifi" if state == WIFI else "run" if state == RUN else "connecting")

    def _show(self, name):
        if self._led is not None and name is not None:
            if self._reprovision and name != "run":
                name = "gesture"
            self._led.show(name, self.hal.ticks_ms())

    def _retry(self, state, backoff=None, slow=False):
        delay = (self._slow if slow else backoff or self._backoff).next_ms()
        self._goto(state, delay)
        if slow:
            self._show("waiting")
        return delay

    def _keep_credentials(self, creds):
        # On flash before they are used: a power cut after this finds them. The same
        # credentials again (a device token accepted once more) cost no flash write. A write
        # the flash refuses is tried again here, before anything else happens. If the chip
        # keeps refusing, the platform holds a device whose credentials only RAM knows: the
        # store keeps them (read back from RAM, written again every minute: _persist_error),
        # they are used this boot, and the meter never provisions again while it has them
        # (that would meet FAILURE: the name is taken). A power cut before a write succeeds
        # loses them (README: when the flash fails).
        if creds == self.creds:
            return
        self.creds = creds
        for _ in range(_CREDS_TRIES):
            if self.store.write(_CREDS_RECORD, creds):
                return
            self.hal.sleep_ms(_CREDS_PAUSE_MS)
        self.log.error("store", "credentials held in RAM only until the flash takes them")

    def _acknowledged(self):
        # A PUBACK. Only now does the session count as working: a server that accepts the
        # CONNECT and then closes the session (rate limits, a takeover, a crash loop) keeps
        # the meter's backoff growing instead of being reconnected to every retry_min_s.
        # The next failure starts the backoff from the bottom again. (Every PUBACK resets it:
        # within a session nothing adds to it, so no flag per session needs keeping.)
        self._backoff.reset()
        self._slow.reset()

    def _advance(self, now):
        s = self.state
        if s == WIFI:
            self._step_wifi(now)
        elif s == TIME:
            self._step_time(now)
        elif s == PROVISION:
            self._step_provision()
        elif s == CONNECT or s == ATTRIBUTES:
            # Their code (firmware/connecting.py) is loaded for the step only: it is not
            # resident at the provisioning connect, the heap's high point, nor while running.
            try:
                from firmware import connecting
            except MemoryError as e:  # no room to load it: retried after the backoff, not a crash
                unload("connecting")
                self.log.warn(s, "%s; retrying in %d s", e, self._retry(s) // 1000)
                return
            try:
                if s == CONNECT:
                    rejected = connecting.connect(self)
                    if rejected is not None:
                        # A CONNACK judged the credentials: the configured token has had its
                        # one try, and the stored ones stand refused this boot, or not.
                        self._candidate = None
                        self._rejected = rejected
                else:
                    connecting.attributes(self)
            finally:
                del connecting
                unload("connecting")

    # --- states ----------------------------------------------------------------------------------

    def _after_network(self):
        if self.creds is None or self._rejected or self._reprovision:
            self._goto(PROVISION)
        else:
            self._goto(CONNECT)

    def _step_wifi(self, now):
        hal = self.hal
        if hal.wifi_connected():
            self._wifi_since = None
            self._wifi_failing = None
            self._join.reset()
            rssi = hal.wifi_rssi()
            self.log.info("wifi", "connected%s", " (RSSI %d dBm)" % rssi if rssi is not None else "")
            if self._clock.synced:
                self._after_network()
            else:
                self._goto(TIME)
            return
        ssid = self.cfg["wifi_ssid"]
        if self._wifi_since is None:
            self.log.info("wifi", "joining %s", ssid)
            try:
                hal.wifi_connect(ssid, self.cfg["wifi_password"])
            except Exception as e:  # ESP32: "Wifi Internal Error" while it is still connecting
                delay = self._retry(WIFI, self._join)
                self.log.warn("wifi", "could not start joining %s (%s); retrying in %d s",
                               ssid, e, delay // 1000)
                return
            self._wifi_since = now
            if self._wifi_failing is None:
                self._wifi_failing = now
        elif hal.ticks_diff(now, self._wifi_since) > _WIFI_JOIN_MS:
            self._wifi_since = None
            why = hal.wifi_status()  # before disconnect(), which replaces the reason with "idle"
            try:
                hal.wifi_disconnect()
            except Exception:
                pass  # the next join starts with a disconnect anyway
            delay = self._retry(WIFI, self._join)
            self.log.warn("wifi", "could not join %s (%s); retrying in %d s", ssid, why,
                           delay // 1000)
            from firmware import setup_request  # setup mode after setup_after_s of this
            self._wifi_failing = setup_request.fail(self, now, why)
            return
        self._next_ms = hal.ticks_add(now, _WIFI_POLL_MS)

    def _step_time(self, now):
        # What the time state decides lives in firmware/sync.py (Clock.sync's module: loaded for
        # the exchange anyway), as provisioning does in firmware/provision.py.
        if not self.hal.wifi_connected():
            self._goto(WIFI)
            return
        from firmware import sync, unload
        self._time_fails += 1
        try:
            go = sync.time_state(self._clock, self.tls is not None, self._time_fails,
                                 self.cfg["ntp_host"])
        finally:
            unload("sync")
        if go:
            self._after_network()
        else:
            self._retry(TIME, self._join)

    def _step_provision(self):
        # Loaded only for the attempt, and unloaded before the connect that follows: the
        # provisioning exchange and the device session's TLS handshake are the heap's two
        # high points, and each should find the other's code gone.
        self._end_session()
        gc.collect()
        from firmware import provision
        working = self._reprovision and self.creds is not None and not self._rejected
        self.hal.wdt_feed()  # a safe point: each exchange below has its own deadline
        try:
            decision, creds = provision.attempt(
                self.link, self.cfg, self.device_name, self.tls, self.log, working,
                self._gesture_tries, self._candidate is not None,
                None if self._rejected else self.creds)
        finally:
            del provision
            unload("provision")
        if decision == NO_DECISION:
            if working:
                self._gesture_tries += 1
            self._retry(PROVISION)
            return
        # Every other decision serves the re-provisioning request, if there was one.
        self._reprovision = False
        if decision == NEW_CREDENTIALS:
            # Not a reason to reset the backoff: only a PUBACK is (a server may issue
            # credentials and then refuse them). The working ones are beside the new ones
            # (provision.attempt) until a CONNACK 0 proves these.
            self._keep_credentials(creds)
            self._rejected = False
            self._goto(CONNECT)
        elif decision == TRY_TOKEN:
            self._candidate = {"type": "ACCESS_TOKEN", "token": self.cfg["access_token"]}
            self._goto(CONNECT)
        elif decision == KEEP_WORKING:
            self._goto(CONNECT)
        elif decision == REFUSED:
            delay = self._retry(CONNECT if self.creds else PROVISION, slow=True)
            self.log.warn("provision", "retrying in %d min", delay // 60000)

    def on_connect(self, remote):
        # CONNACK 0 (firmware/connecting.py): the session's RPC and shared-attribute handler
        # (firmware/remote.py), given the link's messages until _end_session(). A Remote lives
        # for one session; what the sessions before acted on lives here.
        self.remote = remote
        remote._acted = self._acted
        self.link.on_message = remote.on_message

    def _end_session(self):
        self.link.on_message = None  # the link is closed (nothing comes): the Remote can go
        r = self.remote
        if r is not None:
            self._acted = r._acted  # the RPC acted on: a resend next session is not acted on
            self.remote = None
            unload("remote", "ota", "ota_check")  # ota: an update in progress resumes from flash next session

    def _lost(self, why):
        self.link.close(graceful=False)
        self._end_session()
        delay = self._retry(CONNECT)
        self.log.warn("run", "connection lost (%s); reconnecting in %d s", why, delay // 1000)
        if not self.hal.wifi_connected():
            self._goto(WIFI, delay)

    def _run(self, now):
        if not self.hal.wifi_connected():
            self._lost("Wi-Fi down")
            return
        try:
            self.link.poll()
            if self.remote is not None:
                self.remote.service(self, self.link)
                if self.state != RUN:
                    return  # an RPC moved the meter on (reprovision): that session is closed
            link = self.link
            if self.pipeline.send(link, now):
                self._acknowledged()
            # Keepalive (docs/thingsboard.md §9): a PINGREQ once nothing was sent for 3/4 of
            # keepalive_s, so neither a broker's 1.5 x keepalive nor ThingsBoard's inactivity
            # timeout (5 or 10 min, longer than keepalive_s allows) drops a quiet session. No
            # PINGRESP within the link's deadline: poll() raises, and the meter reconnects with
            # the backoff, as after any lost connection.
            if link.pinged is None and link.quiet_ms() >= self.cfg["keepalive_s"] * 750:
                link.ping()
        except LinkError as e:
            self._lost(e)
            return
        if self._on_healthy is not None and self._clock.uptime_s >= _HEALTHY_S:
            self._on_healthy()
            self._on_healthy = None

    def _persist_error(self):
        # The last error survives a reset for `make status`: written only when it changes,
        # and at most once a minute, so a retry loop cannot wear the flash. In the other
        # minutes, what the flash refused earlier (the store keeps it in RAM) is written again:
        # a failing chip sees one attempt a minute from here, and a chip that works again gets
        # the credentials, the index and the markers back on flash without waiting for them
        # to change. Timed by the uptime in seconds (checked every step: a small int for 68
        # years), so an error weeks after the last one does not wait for ticks to come round.
        up = self._clock.uptime_s
        if self._error_s is not None and up - self._error_s < _ERROR_SAVE_S:
            return
        err = self.log.last_error
        if err is not None and err != self._saved_error:
            self.store.write(_ERROR_RECORD, {"msg": err})  # kept in RAM if refused
            self._saved_error = err
        elif self.store.flush():
            return  # nothing was waiting
        self._error_s = up

    # --- asked by the platform (firmware/remote.py) ------------------------------------------------

    def uptime_s(self):
        return self.pipeline.uptime_s()

    def reboot(self, why):
        self.log.warn("main", "%s: saving the index and resetting", why)
        self.shutdown()
        self.hal.reset()

    def request_reprovision(self, why):
        # The power-cycle gesture (at boot), the BOOT button, the reprovision RPC: kept on
        # flash until served, never destroys credentials.
        self.log.warn("boot", "re-provisioning requested (%s)", why)
        if self.cfg["provision_key"] is None:
            # Ready credentials: no provision key or secret on this meter to ask with.
            self.log.warn("boot", "not possible: no provision_key in config.json")
            if self._gesture:
                self._gesture.done()  # a request on flash would come back at every boot
            return
        g = self._gesture
        if g is None:  # unloaded after the power-up window (step()): the request's record only
            from firmware.gesture import BootGesture
            self._gesture = g = BootGesture(self.store, 0, 0, None)
        if not g.requested:  # the gesture at boot has it on flash already
            g.request()
        self._marker.clear()
        self._reprovision = True
        self._gesture_tries = 0
        self._show("gesture")
        if self.state not in (None, WIFI, TIME):
            # Before the network is up the boot states get to it anyway (_after_network).
            self.link.close()
            self._goto(PROVISION)

    # --- planned stop ----------------------------------------------------------------------------

    def shutdown(self):
        """Before a planned reset: keep the index, close the session politely."""
        try:
            self.pipeline.shutdown()
        finally:
            self.link.close()

