# The technician's re-provision gesture: N power-ups in a row, each within a short window
# (default 4, 10 s: the fast power-cycle recovery that Tasmota users know).
#
# Every power-up increments a counter on flash; once the meter has stayed up for the window,
# the counter goes back to 0. Reaching N raises a request, also kept on flash, so a power cut
# while it is being served does not lose it; the meter clears it once the new provisioning
# attempt got an answer and the attributes were acknowledged.
#
# Only power-ups count. A reset while powered (entry.py's reset after a crash, a planned reset,
# a panic, the watchdog) is told apart by the chip's reset cause (hal.reset_cause(): the reset
# reason register survives a reset, not a power loss) and sets the counter back to 0: four
# crashes within the window after boot are not a technician's hand, and a reset breaks a
# gesture in progress.
#
# A brownout series can look like the gesture. That is harmless by design: the request never
# destroys working credentials (they are replaced only by ones the platform just issued), and
# sending the attributes again is idempotent.
#
# Best effort on a failing flash: a write the flash refuses is held in RAM by the store and
# written again later (firmware/store.py), so this boot behaves the same; what a power cut then
# loses is one count (a gesture takes one more power-up, or a counted boot is forgotten) or a
# served request (served once more: harmless, as above). Never a reason to reset: a boot
# that reset on a refused count would refuse it again at the next power-up, a boot loop.

from micropython import const

_RECORD = const("boot")


class BootGesture:
    def __init__(self, store, cycles, window_ms, ticks_diff):
        self._store = store
        self._cycles = cycles
        self._window_ms = window_ms
        self._ticks_diff = ticks_diff
        self._count = 0
        self.requested = False
        self._armed = False  # counter still needs clearing after the window

    def boot(self, now_ms, counted=True):
        """Count this boot (counted: power was applied, not a reset while powered). Returns
        True when a re-provisioning is requested."""
        rec = self._store.read(_RECORD) or {}
        count = rec.get("n", 0) if isinstance(rec.get("n"), int) else 0
        requested = rec.get("req") is True
        if not counted:
            count = 0
        elif self._cycles:
            count += 1
            if count >= self._cycles:
                requested = True
                count = 0
        self._count = count
        self.requested = requested
        if rec.get("n") != count or rec.get("req") is not requested:
            self._store.write(_RECORD, {"n": count, "req": requested})
        self._armed = count != 0
        self._since = now_ms
        return requested

    def tick(self, now_ms):
        # After the window: this boot was not part of a gesture; start counting afresh.
        if self._armed and self._ticks_diff(now_ms, self._since) >= self._window_ms:
            self._armed = False
            self._count = 0
            self._store.write(_RECORD, {"n": 0, "req": self.requested})

    def request(self):
        """Ask for re-provisioning from software (RPC), as the gesture would."""
        self.requested = True
        self._store.write(_RECORD, {"n": self._count, "req": True})

    def done(self):
        """The request was served: forget it."""
        if self.requested:
            self.requested = False
            self._store.write(_RECORD, {"n": self._count, "req": False})
