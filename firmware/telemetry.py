# Telemetry payloads for v1/devices/me/telemetry (docs/thingsboard.md §3).
#
# A reading is (ts_ms, pulse_index, power_dw): epoch ms (0 = not synced: the server stamps it
# on arrival), the cumulative pulse index, and power in tenths of a watt. Text is produced
# with integer math only, so a payload can never hold NaN, Infinity or null, and the energy is
# the exact decimal of index / pulses_per_kwh (pulses.energy_parts).
#
# Keys: energy_kwh (running total, never a delta: a lost message loses no energy),
# power_w, pulses (the raw index, exact for audits). Health goes in its own message.

import sys

from micropython import const

from firmware.pulses import energy_parts

TOPIC = b"v1/devices/me/telemetry"


def _put(buf, n, text):
    # Text into the buffer at n; returns where it ends. A slice assignment from bytes
    # allocates nothing, but one reaching past the end would grow the buffer (CPython and
    # MicroPython alike): refused as a single byte past the end is.
    k = n + len(text)
    if k > len(buf):
        raise IndexError
    buf[n:k] = text
    return k


class Payload:
    """A telemetry message built in a buffer allocated once, at boot.

    A batch of readings is ~2 KB; building it as one string (join, then encode) needs two
    such blocks contiguous on a heap that fragments over days. Here each reading's text is
    written straight into the buffer, number by number (digits()): nothing larger than a
    timestamp's digits is ever requested, and on the 64-bit port nothing at all."""

    def __init__(self, size=2560):
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        # The largest small int of this port: 2**30 - 1 on a 32-bit one (the ESP32), 2**62 - 1
        # on a 64-bit one (MICROPY_OBJ_REPR_A). Larger ones are big ints (CPython: all alike).
        # (The name _cap: an interned name already, MicroPython keeps every name for good.)
        self._cap = (1 << 30) - 1 if sys.maxsize < 1 << 32 else (1 << 62) - 1

    def digits(self, n, v, size=1):
        # The decimal digits of v >= 0 into the buffer at n, at least `size` of them (leading
        # zeros); returns where they end (IndexError past the end). Integer steps on small
        # ints allocate nothing, where b"%d" % v makes a bytes object and an argument tuple
        # per number (make bench: the allocations per publishing step). A big int (a timestamp
        # on the ESP32) would allocate at every step: formatted once instead.
        buf = self._buf
        if v > self._cap:
            return _put(buf, n, b"%0*d" % (size, v))
        end = n
        t = v
        while True:
            end += 1
            size -= 1
            t //= 10
            if not t and size <= 0:
                break
        k = end
        while k > n:
            k -= 1
            buf[k] = 0x30 + v % 10
            v //= 10
        return end

    def batch(self, readings, per_kwh):
        """Fill the buffer with readings (one object, or an array of them). Returns
        (memoryview of the payload, number of readings that fit)."""
        buf, n, used = self._buf, 0, 0
        single = len(readings) == 1
        if not single:
            buf[0] = 0x5B  # [
            n = 1
        end = len(buf) - 1  # room kept for the closing bracket
        for ts, index, power_dw in readings:
            # The reading's JSON object, written after where a comma would go; one that does
            # not fit (IndexError) is left past n, never sent.
            k = n + 1 if used else n
            try:
                if ts:
                    k = _put(buf, k, b'{"ts":')
                    k = self.digits(k, ts)
                    k = _put(buf, k, b',"values":')
                whole, frac, places = energy_parts(index, per_kwh)
                k = _put(buf, k, b'{"energy_kwh":')
                k = self.digits(k, whole)
                if places:
                    buf[k] = 0x2E  # .
                    k = self.digits(k + 1, frac, places)
                k = _put(buf, k, b',"power_w":')
                k = self.digits(k, power_dw // 10)
                buf[k] = 0x2E  # .
                k = self.digits(k + 1, power_dw % 10)
                k = _put(buf, k, b',"pulses":')
                k = self.digits(k, index)
                buf[k] = 0x7D  # }
                k += 1
                if ts:
                    buf[k] = 0x7D  # }
                    k += 1
            except IndexError:
                break
            if k > end:
                break
            if used:
                buf[n] = 0x2C  # ,
            n = k
            used += 1
        if not single:
            buf[n] = 0x5D  # ]
            n += 1
        return self._mv[:n], used


def health(ts, uptime_s, rssi_dbm, heap_free, missed_edges, bounced_edges, errors=0, info=None):
    # errors: flash writes refused since boot, flash_errors (firmware/store.py, backlog.py).
    # info: (free, largest free block) of the ESP32's IDF heap (hal.idf_heap()): heap_free
    # counts only MicroPython's heap, whose growth room and TLS buffers come from it.
    vals = ('{"uptime_s":%d,"heap_free":%d,"missed_edges":%d,"bounced_edges":%d,'
            '"flash_errors":%d%s%s}') % (
        uptime_s, heap_free, missed_edges, bounced_edges, errors,
        ',"rssi_dbm":%d' % rssi_dbm if rssi_dbm is not None else "",
        ',"idf_free":%d,"idf_largest":%d' % info if info else "")
    if ts:
        return ('{"ts":%d,"values":%s}' % (ts, vals)).encode()
    return vals.encode()


_POWER_DW_MAX = const(1000000000)  # 100 MW


def power_dw(power_w):
    # Tenths of a watt, rounded; negative or absurd values cannot come from pulse timing.
    # Clamped to its fields: array('l') and struct 'i' (firmware/readings.py, backlog.py) wrap
    # silently past 2**31, and past 2**30 the ESP32 would allocate a big int for every reading.
    # Two edges a few µs apart (a spike the debounce let through) can time a power that high.
    if not power_w > 0:
        return 0  # also NaN
    if power_w >= _POWER_DW_MAX // 10:
        return _POWER_DW_MAX
    # round(), not int(x + 0.5): one float (x * 10) per reading, not two; it rounds a tie to
    # even, the same on CPython and MicroPython, a tenth of a watt at most on an exact .05.
    return round(power_w * 10)
