# Log lines for the serial console (and the Unix port's stderr in simulation).
# Format: "<uptime s>.<ms> <LEVEL> <tag>: <message>". Secrets go through mask() first, and text
# that came from outside (a file, the server) through escape(). Every line is flushed as
# written, so a log survives the power cut that follows it.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: the host tools share this module (tools/meterconfig.py)
    def const(value):
        return value


_ESCAPE_MAX = const(80)


def escape(value):
    """value (str or bytes) as printable ASCII, safe in one log line: a backslash is doubled,
    every other byte outside 0x20-0x7E becomes \\xNN (so a newline cannot start a fake line
    and no terminal escape or bidi control reaches the console), and text longer than 80
    characters is cut, marked by "...".
    """
    if not isinstance(value, (str, bytes, bytearray)):
        value = str(value)
    cut = len(value) > _ESCAPE_MAX
    raw = value[:_ESCAPE_MAX]
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeError:  # CPython only: a lone surrogate (an undecodable byte in argv)
            raw = raw.encode("utf-8", "surrogatepass")
    # Built in a bytearray from the bytes: iterating or indexing a str would make one-character
    # strings, which MicroPython interns for good.
    out = bytearray()
    for b in raw:
        if b == 92:
            out.extend(b"\\\\")
        elif 32 <= b < 127:
            out.append(b)
        else:
            out.extend(b"\\x%02x" % b)
    if cut:
        out.extend(b"...")
    return out.decode()


def mask(value):
    """A secret as every log line, tool and status output shows it: its first and last 2
    characters around "..." ("su...01"), and nothing of a secret shorter than 8 ("...")."""
    if value is None:
        return "<none>"
    value = str(value)
    if len(value) < 8:
        return "..."
    return escape(value[:2]) + "..." + escape(value[-2:])


class Log:
    def __init__(self, ticks_ms, write=None):
        self._ticks_ms = ticks_ms
        self._t0 = ticks_ms()
        self._write = write or print
        self.last_error = None  # shown by `make status` and the status RPC

    def _emit(self, level, tag, msg, args):
        if args:
            msg = msg % args
        t = self._ticks_ms() - self._t0  # uptime; wraps after 12 days, harmless in a log
        self._write("%d.%03d %s %s: %s" % (t // 1000, t % 1000, level, tag, msg))
        return msg

    def info(self, tag, msg, *args):
        self._emit("I", tag, msg, args)

    def warn(self, tag, msg, *args):
        self._emit("W", tag, msg, args)

    def error(self, tag, msg, *args):
        self.last_error = "%s: %s" % (tag, self._emit("E", tag, msg, args))
