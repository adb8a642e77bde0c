# The reading pipeline: pulses -> readings -> telemetry. Every main-loop step it drains the
# pulse counter, takes a reading when one is due and keeps the pulse index on flash within its
# write budget; while the supervisor is connected it sends the waiting readings (batched,
# paced under ThingsBoard's rate limits) and the health message.
#
# The supervisor (firmware/supervisor.py) calls five things: start() once, service() every
# step, tick() once a second, send() every step of the run state, shutdown() before a planned
# reset. It knows nothing of readings, and this knows nothing of connection states: it is told
# whether it may send, and (reporting()) with which credentials, for the one-shot firmware
# report.
#
# Timers are ticks (ms) and ticks_diff on the board is valid for 6.2 days only (docs/esp32.md:
# Clock and ticks): tick() holds each timer at its period once it is due, so one left unchecked
# for a week (no pulses to persist, offline: nothing to send) reads "due", never "days to go".

import sys

from micropython import const

from firmware import attributes, telemetry, version
from firmware.pacing import Pacer

_BATCH_MAX = const(20)  # readings per telemetry message (~1.5 KB)
_BATCH_GROW_AFTER = const(20)  # acknowledged messages at a reduced batch size before doubling it
_PUBLISH_GAP_MS = const(500)  # between telemetry messages when replaying a backlog
_PULSES_RECORD = const("pulses")


class Pipeline:
    def __init__(self, hal, cfg, store, pulses, queue, clock, log, payload):
        self._hal = hal
        self._cfg = cfg
        self._store = store
        self.pulses = pulses
        self.queue = queue  # readings waiting for their PUBACK (firmware/backlog.py)
        self._clock = clock
        self._log = log
        # One buffer for every telemetry message, allocated once; firmware/entry.py allocates it
        # first thing, before the heap fragments.
        self._payload = payload
        self._pacer = Pacer(hal.ticks_diff, hal.ticks_ms())
        self.interval_s = cfg["publish_interval_s"]
        # Readings, health and the firmware report go to the device profile's telemetry topic
        # (telemetry_topic, in cfg only when given; docs/thingsboard.md §6, §14.10).
        t = cfg.get("telemetry_topic")
        self.topic = t.encode() if t else telemetry.TOPIC
        self._batch_max = _BATCH_MAX
        self._batch_ok = 0  # acknowledged messages since the batch size was last cut
        self.persisted_index = 0
        self._persist_ms = None
        self._sample_ms = None
        self._health_ms = None
        self._publish_ms = None
        self.published = 0  # telemetry messages acknowledged since boot
        # The credentials the firmware report is armed for (reporting()); None once it is known
        # to be acknowledged. (A name MicroPython has interned anyway: main.py.)
        self._armed = None

    def start(self, now):
        rec = self._store.read(_PULSES_RECORD)
        index = rec.get("index") if isinstance(rec, dict) else None
        if isinstance(index, int) and index >= 0:
            # The one write of the counter's register from outside it, once, before its first
            # service(): the index's starting value is this pipeline's record (it alone reads,
            # checks and writes it; make deploy's INDEX= and KWH= write it too). From here on
            # only the counter adds to it.
            self.pulses.index = index
        self.persisted_index = self.pulses.index
        self._persist_ms = now
        if hasattr(self.queue, "load"):
            self.queue.load()  # readings a previous boot could not send

    def uptime_s(self):
        return self._clock.uptime_s

    def set_interval(self, seconds):
        self.interval_s = seconds

    def reporting(self, creds=None):
        """Sending resumes: the first batch may go at once, and the firmware report (title and
        version, firmware/attributes.py) is checked once against the credentials in use."""
        self._publish_ms = None
        self._armed = creds

    # --- every step ------------------------------------------------------------------------------

    def service(self, now):
        self.pulses.service(now)
        self._sample(now)
        self._persist_if_due(now, False)

    def tick(self, now):
        # Once a second (the supervisor). The timers that can go unchecked: the index's (no
        # pulses, nothing to write) and the health message's (offline). The reading timer is
        # checked every step, the publish gap in every step with readings waiting (one comes
        # every interval, at most a day).
        diff, add, cfg = self._hal.ticks_diff, self._hal.ticks_add, self._cfg
        ms = cfg["persist_interval_s"] * 1000
        if diff(now, self._persist_ms) > ms:
            self._persist_ms = add(now, -ms)
        ms = cfg["health_interval_s"] * 1000
        if self._health_ms is not None and diff(now, self._health_ms) > ms:
            self._health_ms = add(now, -ms)
        self._pacer.tick(now)

    def _sample(self, now):
        interval = self.interval_s * 1000
        if self._sample_ms is not None and self._hal.ticks_diff(now, self._sample_ms) < interval:
            return
        # Online or not, synced or not: a reading taken before the clock is known carries this
        # boot's uptime, and gets its time once the clock is synced (firmware/clock.py).
        self._sample_ms = now
        # A reading carries the index as it is on flash, never a newer one: after a power cut
        # the meter restarts from the flash copy, and the server must never see the index go
        # backwards. Writing it now when the write budget allows keeps the lag at most
        # persist_interval_s; power is always live. While the flash refuses the write, the
        # store keeps the index in RAM and readings carry that (same lag): energy keeps
        # reaching the server, and the one trade-off is a power cut in that state, after which
        # the meter restarts from the older index on flash (README: when the flash fails).
        self._persist_if_due(now, False)
        self.queue.push(self._clock.epoch_ms(), self.persisted_index,
                        telemetry.power_dw(self.pulses.power_w))

    def _persist_if_due(self, now, force):
        # Bounded flash wear: at most once per persist_interval_s, and only when changed. A
        # write the flash refuses counts as done (the store holds the index in RAM and writes
        # it again within a minute): a failing chip is tried at this pace, not every step.
        index = self.pulses.index
        if index == self.persisted_index:
            return True
        if not force and self._hal.ticks_diff(now, self._persist_ms) < \
                self._cfg["persist_interval_s"] * 1000:
            return False
        self._store.write(_PULSES_RECORD, {"index": index})
        self.persisted_index = index  # on flash, or held by the store until the flash takes it
        self._persist_ms = now
        return True

    # --- while connected -----------------------------------------------------------------------

    def send(self, link, now):
        """Publish what is due. True when the server acknowledged a message; LinkError when the
        connection failed."""
        acked = False
        creds = self._armed
        if creds is not None:
            # The firmware report (firmware/attributes.py, cfg None), first: one flash read per
            # session to know it was acknowledged before, then nothing.
            marker = attributes.AttributeMarker(self._store)
            if marker.is_sent(None, creds):
                self._armed = None
            elif self._pacer.allow(2, now):
                # A LinkError leaves it armed: the next session sends it.
                link.publish(self.topic, attributes.payload(None), 1)
                marker.mark_sent(None, creds)  # only after the PUBACK
                self._armed = None
                acked = True
                self._log.info("run", "firmware %s %s reported (current_fw_title, "
                               "current_fw_version)", version.TITLE, version.VERSION)
        if self._publish_due(link, now):
            acked = True
        self._health_due(link, now)
        return acked

    def _publish_due(self, link, now):
        q = self.queue
        if not len(q):
            return False
        if self._publish_ms is not None and self._hal.ticks_diff(now, self._publish_ms) < _PUBLISH_GAP_MS:
            return False
        paced = False
        try:
            batch = q.peek(self._batch_max)
            for r in batch:
                if r[0] <= 0:
                    # Taken before the clock was known: timed by firmware/sync.py, loaded for
                    # it, so only once the pacer lets this message go (a refusal is tried again
                    # every step). Paid for the whole peek: never fewer points than are sent.
                    if not self._pacer.allow(3 * len(batch), now):
                        return False
                    paced = True
                    batch = self._clock.resolve(q, self._batch_max)
                    break
            if not batch:
                return False
            payload, n = self._payload.batch(batch, self._cfg["pulses_per_kwh"])
        except MemoryError:
            # Never a reason to reset (the same backlog would be waiting after the reset):
            # send fewer readings per message instead.
            self._shrink_batch(self._batch_max, "low memory")
            return False
        if not paced and not self._pacer.allow(3 * n, now):
            return False  # ThingsBoard would close the session for rate: wait for tokens
        try:
            link.publish(self.topic, payload, 1)
        # The link's exception class, looked up only when something was raised: setup mode
        # (firmware/setup_mode.py) runs this pipeline without ever sending, and importing the
        # link's module for one class would cost it 8 KB; an import statement here would
        # allocate 600 bytes at every publish (make bench's allocation trace).
        except sys.modules["firmware.link"].LinkError:
            if n > 1:
                # A server with rate limits tighter than ThingsBoard Cloud's (which the pacer
                # assumes) closes the session on a batch whose data points exceed its budget,
                # and would close it again on the same batch after every reconnect.
                self._shrink_batch(n, "connection lost sending %d readings" % n)
            raise
        q.drop(n)  # only now, after the PUBACK
        self.published += 1
        self._publish_ms = now
        if self._batch_max < _BATCH_MAX:
            self._batch_ok += 1
            if self._batch_ok >= _BATCH_GROW_AFTER:
                self._batch_max = min(_BATCH_MAX, self._batch_max * 2)
                self._batch_ok = 0
        return True

    def _shrink_batch(self, n, why):
        self._batch_max = max(1, n // 2)
        self._batch_ok = 0
        self._log.warn("run", "%s: %d readings per message for now", why, self._batch_max)

    def _health_due(self, link, now):
        interval = self._cfg["health_interval_s"] * 1000
        if not interval:
            return
        if self._health_ms is not None and self._hal.ticks_diff(now, self._health_ms) < interval:
            return
        if not self._pacer.allow(4, now):
            return
        self._health_ms = now
        hal = self._hal
        ts = self._clock.epoch_ms()
        link.publish(self.topic, telemetry.health(
            ts if ts > 0 else 0, self.uptime_s(), hal.wifi_rssi(), hal.mem_free(),
            self.pulses.missed_edges, self.pulses.bounced_edges,
            self._store.errors + self.queue.errors, hal.idf_heap()), 0)

    # --- planned stop ----------------------------------------------------------------------------

    def shutdown(self):
        """Before a planned reset: the pulses counted so far go to flash."""
        now = self._hal.ticks_ms()
        self.pulses.service(now)
        self._persist_if_due(now, True)
