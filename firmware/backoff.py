# Retry pacing: bounded exponential backoff with jitter.
#
# A fleet of meters that lose the server together must not come back together: each delay is
# drawn uniformly from [d/2, d] where d doubles per failure up to a cap ("equal jitter"). The
# lower half keeps a single meter from retrying too fast; the spread keeps a fleet apart.


class Backoff:
    def __init__(self, min_ms, max_ms, rand):
        self.min_ms = min_ms
        self.max_ms = max_ms
        self._rand = rand  # rand() -> float in [0, 1)
        self.failures = 0

    def next_ms(self):
        """Delay before the next attempt after one more failure."""
        d = self.min_ms << min(self.failures, 20)
        if d > self.max_ms:
            d = self.max_ms
        self.failures += 1
        half = d // 2
        return half + int(self._rand() * (d - half + 1))

    def reset(self):
        self.failures = 0
