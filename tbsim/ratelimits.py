"""Per-device transport rate limits as ThingsBoard enforces them (docs/thingsboard.md §7).

TB keeps three limiters per device, each a bucket4j bucket with one "capacity:seconds" bandwidth per
window, greedy refill (tokens trickle back continuously) and starting full (TbRateLimits):
  messages             - every non-telemetry transport message, including the session open at CONNECT;
  telemetry messages   - telemetry and client-attribute publishes (one token each);
  telemetry data points- the number of keys in those publishes.
DefaultTransportRateLimitService.checkEntityRateLimit: a message with data points > 0 takes one
telemetry-message token and then the data points; anything else takes one messages token.
"""
import time

# ThingsBoard Cloud per-device plan values (D-SUB, plans since 2026-01-20).
PLANS = {
    "free": {
        "messages": "50:1,1000:60,15000:3600",
        "telemetryMessages": "50:1,600:60,7000:3600",
        "telemetryDataPoints": "100:1,2000:60,15000:3600",
    },
    "paid": {
        "messages": "100:1,1000:60,15000:3600",
        "telemetryMessages": "100:1,600:60,7000:3600",
        "telemetryDataPoints": "200:1,2000:60,15000:3600",
    },
}


class Bucket:
    """All windows of one limiter; a consume succeeds only if every window has the tokens."""

    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self._clock = clock
        self._windows = []
        for part in config.split(","):
            capacity, seconds = (int(x) for x in part.split(":"))
            self._windows.append([capacity, capacity / seconds, float(capacity)])
        self._last = clock()

    def try_consume(self, n=1):
        now = self._clock()
        elapsed, self._last = now - self._last, now
        for w in self._windows:
            w[2] = min(w[0], w[2] + elapsed * w[1])
        if all(w[2] >= n for w in self._windows):
            for w in self._windows:
                w[2] -= n
            return True
        return False


class DeviceLimits:
    def __init__(self, plan, clock=time.monotonic):
        config = PLANS[plan]
        self.messages = Bucket(config["messages"], clock)
        self.telemetry_messages = Bucket(config["telemetryMessages"], clock)
        self.telemetry_data_points = Bucket(config["telemetryDataPoints"], clock)

    def check(self, data_points=0):
        if data_points > 0:
            # Same short-circuit as TB: a failed data-point check has already spent the message token.
            return self.telemetry_messages.try_consume() and self.telemetry_data_points.try_consume(data_points)
        return self.messages.try_consume()


def session_limits_payload(plan, max_payload=65536, max_inflight=100):
    """Body of the built-in getSessionLimits RPC reply (SessionLimits serialised by Jackson)."""
    config = PLANS.get(plan) if plan else None
    return {
        "maxPayloadSize": max_payload,
        "maxInflightMessages": max_inflight,
        "rateLimits": {
            "messages": config["messages"] if config else None,
            "telemetryMessages": config["telemetryMessages"] if config else None,
            "telemetryDataPoints": config["telemetryDataPoints"] if config else None,
        },
    }
