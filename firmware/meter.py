# The meter's supervisor: boot states, connection states and the run loop.
#
#   wifi -> time -> [provision] -> connect -> [attributes] -> run
#     ^        |          |             |            |          |
#     +--------+----------+-------------+------------+----------+  failure: jittered backoff
#
# One loop, never blocked for long: each step() drains the pulse counter, persists the index
# when due, drives the LED and the power-cycle gesture, and advances the connection state only
# when its backoff timer has expired. Pulses are counted from the first step on, whatever the
# network does. Blocking calls (DNS, TCP, TLS, MQTT) are bounded by the link's socket timeout;
# the hardware counter and the interrupt handler keep counting through them.
#
# Re-provisioning rules (thingsboard-device-api.md §2.8, §1):
# - provision only when no credentials are stored, the stored ones were refused with CONNACK 5
#   (or 2), or the technician's gesture asked for it; never on DNS/socket errors, timeouts or
#   CONNACK 3;
# - a credential is replaced only by one the platform just issued (SUCCESS) or by the configured
#   device token after it was accepted (CONNACK 0); FAILURE and NOT_FOUND keep what we have;
# - NOT_FOUND and FAILURE with no way forward are retried slowly (retry_slow_s), never hammered.

from micropython import const

from firmware import attributes, credentials, telemetry, unload
from firmware.backoff import Backoff
from firmware.link import LinkError
from firmware.log import mask
from firmware.pacing import Pacer

WIFI = "wifi"
TIME = "time"
PROVISION = "provision"
CONNECT = "connect"
ATTRIBUTES = "attributes"
RUN = "run"

_LOOP_MS = const(50)
_WIFI_JOIN_MS = const(30000)
_WIFI_POLL_MS = const(250)
_TIME_TRIES = const(3)
_TIME_RESYNC_MS = const(3600000)
_BATCH_MAX = const(20)  # readings per telemetry message (~1.5 KB)
_BATCH_GROW_AFTER = const(20)  # acknowledged messages at a reduced batch size before doubling it
_PUBLISH_GAP_MS = const(500)  # between telemetry messages when replaying a backlog
_HEALTHY_MS = const(3600000)
_LED_FOR = {WIFI: "wifi", RUN: "run"}  # every other state: "connecting"
_PULSES_RECORD = const("pulses")
_ERROR_RECORD = const("lasterr")
_ERROR_SAVE_MS = const(60000)
_CREDS_RECORD = const("creds")


class Meter:
    def __init__(self, hal, cfg, store, link, pulses, queue, log, rand, device_name, tls=None,
                 gesture=None, led=None, extensions=None, on_healthy=None, payload=None):
        self.hal = hal
        self.cfg = cfg
        self.store = store
        self.link = link
        self.pulses = pulses
        self.queue = queue
        self.log = log
        self.device_name = device_name
        self.tls = tls
        self._gesture = gesture
        self._led = led
        self._ext = extensions  # optional run-state services (RPC, shared attributes)
        self._on_healthy = on_healthy  # called once after an hour of running (crash counter)
        self._marker = attributes.AttributeMarker(store)
        self._backoff = Backoff(cfg["retry_min_s"] * 1000, cfg["retry_max_s"] * 1000, rand)
        self._slow = Backoff(cfg["retry_slow_s"] * 1000, cfg["retry_slow_s"] * 4000, rand)
        self._pacer = Pacer(hal.ticks_diff, hal.ticks_ms())
        # One buffer for every telemetry message, allocated once; main.py allocates it first
        # thing, before the heap fragments.
        self._payload = payload or telemetry.Payload()
        self._batch_max = _BATCH_MAX
        self._batch_ok = 0  # acknowledged messages since the batch size was last cut
        self._session_ok = False  # the server acknowledged something on this connection
        self.state = None
        self.creds = None
        self.candidate = None  # the configured device token, tried once after FAILURE
        self.rejected = False  # the stored credentials got CONNACK 5 this boot
        self.reprovision = False  # gesture: provision once more this boot
        self.gesture_tries = 0
        self._next_ms = 0
        self._wifi_since = None
        self._time_fails = 0
        self._time_synced = False
        self._time_next_ms = 0
        self.persisted_index = 0
        self._persist_ms = None
        self._sample_ms = None
        self._health_ms = None
        self._publish_ms = None
        self._boot_ms = 0
        self.published = 0  # telemetry messages acknowledged since boot
        self.last_outcome = ""  # last provisioning outcome, for status
        self._saved_error = None
        self._error_ms = None

    # --- boot ----------------------------------------------------------------------------------

    def start(self):
        hal = self.hal
        now = hal.ticks_ms()
        self._boot_ms = now
        rec = self.store.read(_PULSES_RECORD)
        index = rec.get("index") if isinstance(rec, dict) else None
        if isinstance(index, int) and index >= 0:
            self.pulses.index = index
        self.persisted_index = self.pulses.index
        self._persist_ms = now
        if hasattr(self.queue, "load"):
            self.queue.load()  # readings a previous boot could not send
        creds = self.store.read(_CREDS_RECORD)
        self.creds = creds if credentials.valid(creds) else None
        if self._gesture is not None and self._gesture.boot(
                now, hal.boot_button_held(self.cfg["boot_button_pin"])):
            self.log.warn("boot", "re-provisioning requested (power-cycle gesture or button)")
            self.reprovision = True
            self._marker.clear()
            self._show("gesture")
        self.log.info("boot", "device %s, %s, pulse index %d, %s", self.device_name,
                       "credentials stored (%s)" % credentials.describe(self.creds)
                       if self.creds else "no credentials", self.pulses.index,
                       "TLS to %s:%d" % (self.cfg["tb_host"], self.cfg["tb_port"]) if self.tls
                       else "PLAIN MQTT to %s:%d" % (self.cfg["tb_host"], self.cfg["tb_port"]))
        if self.tls is None:
            self.log.warn("boot", "TLS is off (tb_plain_ok): credentials travel in clear text")
        self.goto(WIFI)

    # --- main loop -----------------------------------------------------------------------------

    def run_forever(self):
        self.start()
        while True:
            self.step()
            # Pulses are counted by the interrupt handler and the hardware counter while this
            # sleeps; the loop only needs to be quick enough for the LED (50 ms blips).
            self.hal.sleep_ms(_LOOP_MS)

    def step(self):
        hal = self.hal
        hal.wdt_feed()
        now = hal.ticks_ms()
        self.pulses.service(now)
        if self._gesture is not None:
            self._gesture.tick(now)
        self._sample(now)
        self._persist_if_due(now, False)
        if self._led is not None:
            self._led.update(now)
        self._persist_error(now)
        if self._due(now, self._next_ms):
            self._advance(now)
        if self.state == RUN:
            self._run(now)

    def _due(self, now, at):
        return self.hal.ticks_diff(now, at) >= 0

    def goto(self, state, delay_ms=0):
        # Timers start from the clock *now*: the step that decided this may have blocked for
        # seconds (DNS, TLS, a provisioning exchange).
        if state != self.state:
            self.log.info("state", "%s -> %s%s", self.state or "boot", state,
                           " in %d.%ds" % (delay_ms // 1000, delay_ms % 1000 // 100) if delay_ms else "")
            self.state = state
        self._next_ms = self.hal.ticks_add(self.hal.ticks_ms(), delay_ms)
        self._show(_LED_FOR.get(state, "connecting"))

    def _show(self, name):
        if self._led is not None and name is not None:
            if self.reprovision and name != "run":
                name = "gesture"
            self._led.show(name, self.hal.ticks_ms())

    def retry(self, state, slow=False):
        delay = (self._slow if slow else self._backoff).next_ms()
        self.goto(state, delay)
        if slow:
            self._show("waiting")
        return delay

    def keep_credentials(self, creds):
        # On flash before they are used: a power cut after this finds them.
        self.store.write(_CREDS_RECORD, creds)
        self.creds = creds

    def backoff_reset(self):
        # The platform answered: the next failure starts the backoff from the bottom again.
        self._backoff.reset()
        self._slow.reset()

    def _acknowledged(self):
        # A PUBACK. Only now does the session count as working: a server that accepts the
        # CONNECT and then closes the session (rate limits, a takeover, a crash loop) keeps
        # the meter's backoff growing instead of being reconnected to every retry_min_s.
        if not self._session_ok:
            self._session_ok = True
            self.backoff_reset()

    def _advance(self, now):
        s = self.state
        if s == WIFI:
            self._step_wifi(now)
        elif s == TIME:
            self._step_time(now)
        elif s == PROVISION:
            # Loaded only while needed: most boots never provision (unloaded again when the
            # meter reaches the run state).
            from firmware import provision
            provision.step(self)
        elif s == CONNECT:
            self._step_connect(now)
        elif s == ATTRIBUTES:
            self._step_attributes(now)

    # --- states ----------------------------------------------------------------------------------

    def _after_network(self):
        if self._needs_provisioning():
            self.goto(PROVISION)
        else:
            self.goto(CONNECT)

    def _needs_provisioning(self):
        return self.creds is None or self.rejected or self.reprovision

    def _step_wifi(self, now):
        hal = self.hal
        if hal.wifi_connected():
            self._wifi_since = None
            self.log.info("wifi", "connected%s", _rssi_text(hal.wifi_rssi()))
            self._backoff.reset()  # Wi-Fi retries say nothing about the server
            if self._time_synced:
                self._after_network()
            else:
                self.goto(TIME)
            return
        if self._wifi_since is None:
            self.log.info("wifi", "joining %s", self.cfg["wifi_ssid"])
            hal.wifi_connect(self.cfg["wifi_ssid"], self.cfg["wifi_password"])
            self._wifi_since = now
        elif hal.ticks_diff(now, self._wifi_since) > _WIFI_JOIN_MS:
            self._wifi_since = None
            hal.wifi_disconnect()
            delay = self.retry(WIFI)
            self.log.warn("wifi", "could not join %s (%s); retrying in %d s",
                           self.cfg["wifi_ssid"], hal.wifi_status(), delay // 1000)
            return
        self._next_ms = hal.ticks_add(now, _WIFI_POLL_MS)

    def _step_time(self, now):
        if self._sync_time(now):
            self._after_network()
            return
        self._time_fails += 1
        if self._time_fails >= _TIME_TRIES:
            self.log.warn("time", "no time from %s; readings carry server time until it syncs",
                           self.cfg["ntp_host"])
            self._after_network()
        else:
            self.retry(TIME)

    def _sync_time(self, now):
        ok = self.hal.sync_time(self.cfg["ntp_host"])
        self._time_next_ms = self.hal.ticks_add(now, _TIME_RESYNC_MS)
        if ok and not self._time_synced:
            self.log.info("time", "synced: %d", self.hal.epoch_ms() // 1000)
        self._time_synced = self._time_synced or ok
        return ok

    def _step_connect(self, now):
        cfg = self.cfg
        creds = self.candidate or self.creds
        if creds is None:
            self.goto(PROVISION)
            return
        cid, user, pw = credentials.connect_params(creds, self.device_name)
        self.log.info("connect", "to %s:%d as %s (%s %s)", cfg["tb_host"], cfg["tb_port"], cid,
                       credentials.describe(creds), mask(user if creds["type"] ==
                                                            "ACCESS_TOKEN" else pw))
        self.link.on_message = self._on_message
        try:
            rc = self.link.open(cfg["tb_host"], cfg["tb_port"], cid, user, pw,
                                 cfg["keepalive_s"], self.tls)
        except LinkError as e:
            delay = self.retry(CONNECT)
            self.log.warn("connect", "%s; retrying in %d s", e, delay // 1000)
            if not self.hal.wifi_connected():
                self.goto(WIFI, delay)
            return
        if rc == 0:
            if self.candidate is not None:
                # The platform accepted the configured token: the device is ours.
                self.keep_credentials(creds)
                self.candidate = None
                self.log.info("connect", "device token accepted; stored as credentials")
            self.rejected = False
            self._session_ok = False
            self.log.info("connect", "connected")
            try:
                refused = self._ext is not None and not self._ext.on_connect(self.link)
            except LinkError as e:  # the server closed the session while we subscribed
                delay = self.retry(CONNECT)
                self.log.warn("connect", "%s; retrying in %d s", e, delay // 1000)
                return
            if refused:
                self.link.close(graceful=False)
                self.retry(CONNECT)
                return
            if self._marker.is_sent(cfg, self.creds):
                self._enter_run()
            else:
                self.goto(ATTRIBUTES)
            return
        if rc in (2, 4, 5):
            if self.candidate is not None:
                self.candidate = None
                self.log.error("connect", "the configured device token was refused (CONNACK %d)", rc)
                delay = self.retry(CONNECT if self.creds else PROVISION, slow=True)
                self.log.warn("connect", "retrying in %d min", delay // 60000)
                return
            self.log.error("connect", "credentials refused (CONNACK %d): device deleted or "
                                       "credentials changed on the platform; provisioning again", rc)
            self.rejected = True
            self.goto(PROVISION)
            return
        delay = self.retry(CONNECT)
        self.log.warn("connect", "server refused the session (CONNACK %d); retrying in %d s",
                       rc, delay // 1000)

    def _step_attributes(self, now):
        cfg = self.cfg
        self.log.info("attributes", "sending %s=%s and %s=%s", cfg["attr_supplier_key"],
                       mask(cfg["supplier_key"]), cfg["attr_cups_key"], cfg["cups"])
        try:
            self.link.publish(attributes.TOPIC, attributes.payload(cfg), 1)
        except LinkError as e:
            delay = self.retry(CONNECT)
            self.log.warn("attributes", "not acknowledged (%s); reconnecting in %d s",
                           e, delay // 1000)
            return
        # PUBACK received: only now is it safe to say "sent".
        self._acknowledged()
        self._marker.mark_sent(cfg, self.creds)
        self.log.info("attributes", "acknowledged")
        if self._gesture is not None:
            self._gesture.done()
        self.reprovision = False
        self._enter_run()

    def _enter_run(self):
        self._publish_ms = None
        unload("provision")
        self.goto(RUN)
        self.log.info("run", "reporting every %d s; heap free %d", self.cfg["publish_interval_s"],
                       self.hal.mem_free())

    def _lost(self, why):
        self.link.close(graceful=False)
        delay = self.retry(CONNECT)
        self.log.warn("run", "connection lost (%s); reconnecting in %d s", why, delay // 1000)
        if not self.hal.wifi_connected():
            self.goto(WIFI, delay)

    def _run(self, now):
        if not self.hal.wifi_connected():
            self._lost("Wi-Fi down")
            return
        try:
            self.link.poll()
            if self._ext is not None:
                self._ext.service(self, self.link, now)
            self._publish_due(now)
            self._health_due(now)
        except LinkError as e:
            self._lost(e)
            return
        if not self._time_synced and self._due(now, self._time_next_ms):
            self._sync_time(now)
        if self._on_healthy is not None and self.hal.ticks_diff(now, self._boot_ms) >= _HEALTHY_MS:
            self._on_healthy()
            self._on_healthy = None

    def _on_message(self, topic, msg):
        if self._ext is not None:
            self._ext.on_message(topic, msg)

    # --- readings --------------------------------------------------------------------------------

    def _sample(self, now):
        interval = self.cfg["publish_interval_s"] * 1000
        if self._sample_ms is not None and self.hal.ticks_diff(now, self._sample_ms) < interval:
            return
        ts = self.hal.epoch_ms() if self._time_synced else 0
        if not ts and self.state != RUN:
            # No timestamp and nobody to send it to: the index keeps the energy anyway. The
            # first reading is taken as soon as there is either.
            return
        self._sample_ms = now
        # A reading carries the index as it is on flash, never a newer one: after a power cut
        # the meter restarts from the flash copy, and the server must never see the index go
        # backwards. Writing it now when the write budget allows keeps the lag at most
        # persist_interval_s; power is always live.
        self._persist_if_due(now, False)
        self.queue.push(ts, self.persisted_index, telemetry.power_dw(self.pulses.power_w))

    def _persist_if_due(self, now, force):
        # Bounded flash wear: at most once per persist_interval_s, and only when changed.
        index = self.pulses.index
        if index == self.persisted_index:
            return True
        if not force and self.hal.ticks_diff(now, self._persist_ms) < \
                self.cfg["persist_interval_s"] * 1000:
            return False
        self.store.write(_PULSES_RECORD, {"index": index})
        self.persisted_index = index
        self._persist_ms = now
        return True

    def _persist_error(self, now):
        # The last error survives a reset for `make status`: written only when it changes,
        # and at most once a minute, so a retry loop cannot wear the flash.
        err = self.log.last_error
        if err is None or err == self._saved_error:
            return
        if self._error_ms is not None and self.hal.ticks_diff(now, self._error_ms) < _ERROR_SAVE_MS:
            return
        self.store.write(_ERROR_RECORD, {"msg": err})
        self._saved_error = err
        self._error_ms = now

    def _publish_due(self, now):
        q = self.queue
        if not len(q):
            return
        if self._publish_ms is not None and self.hal.ticks_diff(now, self._publish_ms) < _PUBLISH_GAP_MS:
            return
        try:
            batch = q.peek(self._batch_max)
            if not batch:
                return
            payload, n = self._payload.batch(batch, self.cfg["pulses_per_kwh"])
        except MemoryError:
            # Never a reason to reset (the same backlog would be waiting after the reset):
            # send fewer readings per message instead.
            self._shrink_batch(self._batch_max, "low memory")
            return
        if not self._pacer.allow(3 * n, now):
            return  # ThingsBoard would close the session for rate: wait for tokens
        try:
            self.link.publish(telemetry.TOPIC, payload, 1)
        except LinkError:
            if n > 1:
                # A server with rate limits tighter than ThingsBoard Cloud's (which the pacer
                # assumes) closes the session on a batch whose data points exceed its budget,
                # and would close it again on the same batch after every reconnect.
                self._shrink_batch(n, "connection lost sending %d readings" % n)
            raise
        q.drop(n)  # only now, after the PUBACK
        self.published += 1
        self._publish_ms = now
        self._acknowledged()
        if self._batch_max < _BATCH_MAX:
            self._batch_ok += 1
            if self._batch_ok >= _BATCH_GROW_AFTER:
                self._batch_max = min(_BATCH_MAX, self._batch_max * 2)
                self._batch_ok = 0

    def _shrink_batch(self, n, why):
        self._batch_max = max(1, n // 2)
        self._batch_ok = 0
        self.log.warn("run", "%s: %d readings per message for now", why, self._batch_max)

    def _health_due(self, now):
        interval = self.cfg["health_interval_s"] * 1000
        if not interval:
            return
        if self._health_ms is not None and self.hal.ticks_diff(now, self._health_ms) < interval:
            return
        if not self._pacer.allow(4, now):
            return
        self._health_ms = now
        hal = self.hal
        self.link.publish(telemetry.TOPIC, telemetry.health(
            hal.epoch_ms() if self._time_synced else 0, self.uptime_s(), hal.wifi_rssi(), hal.mem_free(),
            self.pulses.missed_edges), 0)

    # --- asked by the platform (firmware/remote.py) ------------------------------------------------

    def uptime_s(self):
        return self.hal.ticks_diff(self.hal.ticks_ms(), self._boot_ms) // 1000

    def reboot(self, why):
        self.log.warn("main", "%s: saving the index and resetting", why)
        self.shutdown()
        self.hal.reset()

    def request_reprovision(self, why):
        # As the power-cycle gesture: kept on flash until served, never destroys credentials.
        self.log.warn("boot", "re-provisioning requested (%s)", why)
        if self._gesture is not None:
            self._gesture.request()
        self._marker.clear()
        self.reprovision = True
        self.gesture_tries = 0
        self.link.close()
        self.goto(PROVISION)

    # --- planned stop ----------------------------------------------------------------------------

    def shutdown(self):
        """Before a planned reset: keep the index, close the session politely."""
        try:
            self.pulses.service(self.hal.ticks_ms())
            self._persist_if_due(self.hal.ticks_ms(), True)
        finally:
            self.link.close()


def _rssi_text(rssi):
    return " (RSSI %d dBm)" % rssi if rssi is not None else ""
