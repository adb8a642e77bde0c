# Log lines for the serial console (and the Unix port's stderr in simulation).
# Format: "<uptime s>.<ms> <LEVEL> <tag>: <message>". Secrets go through mask() first, and text
# that came from config.json through firmware.config.escape(). Every line is flushed as
# written, so a log survives the power cut that follows it.

def mask(value):
    """A secret as every log line, tool and status output shows it: its first and last 2
    characters around "..." ("su...01"); nothing of a secret shorter than 8 characters, or of
    one whose 4 characters shown are not all printable ASCII ("...")."""
    if value is None:
        return "<none>"
    value = str(value)
    shown = value[:2] + "..." + value[-2:]
    if len(value) < 8:
        return "..."
    # Over the bytes: iterating a str makes one-character strings, which MicroPython interns.
    for b in shown.encode():
        if b < 32 or b > 126:
            return "..."
    return shown


class Log:
    def __init__(self, ticks_ms, write=None):
        self._ticks_ms = ticks_ms
        self._t0 = ticks_ms()
        self._write = write or print
        self.last_error = None  # shown by `make status` and the status RPC
        # The meter's clock, once wired (firmware/clock.py: an uptime that never wraps). Until
        # then, ticks since boot modulo 2**30 ms: right for 12.4 days on the board (the ticks
        # period); a boot or a config-error halt lasting longer shows that modulo.
        self.uptime_ms = None

    def _emit(self, level, tag, msg, args):
        if args:
            msg = msg % args
        f = self.uptime_ms
        t = f() if f else (self._ticks_ms() - self._t0) & 0x3FFFFFFF
        self._write("%d.%03d %s %s: %s" % (t // 1000, t % 1000, level, tag, msg))
        return msg

    def info(self, tag, msg, *args):
        self._emit("I", tag, msg, args)

    def warn(self, tag, msg, *args):
        self._emit("W", tag, msg, args)

    def error(self, tag, msg, *args):
        self.last_error = "%s: %s" % (tag, self._emit("E", tag, msg, args))
