# Helpers for tests that run on CPython (pytest) and on the MicroPython Unix port (run.py).
# No pytest features here: plain functions and asserts.

import os


class Clock:
    # ticks_* with the ESP32's 2**30 period, driven by hand. By default both ticks start 30 s
    # before they wrap (ticks_us wraps again every 17.9 min, ticks_ms every 12.4 days), as a
    # board's do 12.4 days after power-up.
    PERIOD = 1 << 30
    START_US = ((1 << 30) - 30000) * 1000

    def __init__(self, start_us=START_US):
        self.us = start_us

    def ticks_us(self):
        return self.us % self.PERIOD

    def ticks_ms(self):
        return (self.us // 1000) % self.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) & (self.PERIOD - 1)
        return d - self.PERIOD if d >= (self.PERIOD >> 1) else d

    def ticks_add(self, a, b):
        return (a + b) % self.PERIOD

    def advance_us(self, us):
        self.us += us

    def advance_ms(self, ms):
        self.us += ms * 1000


class ListLog:
    def __init__(self):
        self.lines = []
        self.last_error = None

    def _add(self, level, tag, msg, args):
        self.lines.append("%s %s: %s" % (level, tag, msg % args if args else msg))

    def info(self, tag, msg, *args):
        self._add("I", tag, msg, args)

    def warn(self, tag, msg, *args):
        self._add("W", tag, msg, args)

    def error(self, tag, msg, *args):
        self._add("E", tag, msg, args)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


_n = [0]


def fresh_dir():
    """A new empty directory, made the working directory (the Store's flash)."""
    base = os.getenv("PORTABLE_TMP") or "/tmp"
    while True:
        _n[0] += 1
        d = "%s/mtest-%d-%d" % (base, os.getpid() if hasattr(os, "getpid") else 0, _n[0])
        try:
            os.mkdir(d)
            break
        except OSError:
            continue
    os.chdir(d)
    return d


def telemetry_bytes(readings, per_kwh):
    """The telemetry payload for a list of readings, as bytes (the meter builds it in its
    preallocated buffer, firmware/telemetry.py Payload)."""
    from firmware.telemetry import Payload
    mv, _ = Payload(64 + 160 * len(readings)).batch(readings, per_kwh)
    return bytes(mv)
