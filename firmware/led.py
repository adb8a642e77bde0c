# Status LED patterns: what a technician sees on the board (README: technician's guide).
# A pattern is a tuple of alternating on/off durations in ms, repeated.

PATTERNS = {
    "config-error": (100, 100, 100, 100, 100, 1500),  # 3 quick flashes, pause: fix config.json
    "wifi": (500, 500),  # slow blink: joining Wi-Fi
    "connecting": (100, 100, 100, 700),  # double flash: reaching ThingsBoard / provisioning
    "waiting": (1500, 500),  # long on: the platform said no (NOT_FOUND, FAILURE, or refused the
    # configured credentials): a technician is needed; retrying slowly
    "gesture": (50, 50),  # rapid flicker: re-provisioning requested by power cycles
    "run": (50, 2950),  # short blip every 3 s: reporting normally
}


class StatusLed:
    def __init__(self, set_led, ticks_diff, log=None):
        self._set = set_led  # set_led(bool) or None when the board has no LED
        self._ticks_diff = ticks_diff
        self._log = log
        self.name = None
        self._pattern = None
        self._i = 0
        self._since = 0

    def show(self, name, now_ms):
        if name == self.name:
            return
        self.name = name
        self._pattern = PATTERNS[name]
        self._i = 0
        self._since = now_ms
        if self._set is not None:
            self._set(True)
        if self._log is not None:
            self._log.info("led", "pattern %s", name)

    def update(self, now_ms):
        p = self._pattern
        if p is None or self._set is None:
            return
        if self._ticks_diff(now_ms, self._since) >= p[self._i]:
            self._since = now_ms
            self._i = (self._i + 1) % len(p)
            self._set(self._i % 2 == 0)  # even slots are "on"
