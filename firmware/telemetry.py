# Telemetry payloads for v1/devices/me/telemetry (docs/thingsboard.md §3).
#
# A reading is (ts_ms, pulse_index, power_dw): epoch ms (0 = not synced: the server stamps it
# on arrival), the cumulative pulse index, and power in tenths of a watt. Text is produced
# with integer math only, so a payload can never hold NaN, Infinity or null, and the energy is
# the exact decimal of index / pulses_per_kwh (pulses.energy_parts).
#
# Keys: energy_kwh (running total, never a delta: a lost message loses no energy),
# power_w, pulses (the raw index, exact for audits). Health goes in its own message.

from micropython import const

from firmware.pulses import energy_parts

TOPIC = b"v1/devices/me/telemetry"


def _values(index, power_dw, per_kwh):
    whole, frac, places = energy_parts(index, per_kwh)
    if places:
        return b'{"energy_kwh":%d.%0*d,"power_w":%d.%d,"pulses":%d}' % (
            whole, places, frac, power_dw // 10, power_dw % 10, index)
    return b'{"energy_kwh":%d,"power_w":%d.%d,"pulses":%d}' % (
        whole, power_dw // 10, power_dw % 10, index)


class Payload:
    """A telemetry message built in a buffer allocated once, at boot.

    A batch of readings is ~2 KB; building it as one string (join, then encode) needs two
    such blocks contiguous on a heap that fragments over days. Here each reading is formatted
    in two short pieces (its timestamp, its values: each well under 100 bytes) and copied in;
    nothing larger is ever requested."""

    def __init__(self, size=2560):
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)

    def batch(self, readings, per_kwh):
        """Fill the buffer with readings (one object, or an array of them). Returns
        (memoryview of the payload, number of readings that fit)."""
        buf, n, used = self._buf, 0, 0
        single = len(readings) == 1
        if not single:
            buf[0] = 0x5B  # [
            n = 1
        for r in readings:
            head = b'{"ts":%d,"values":' % r[0] if r[0] else b""
            body = _values(r[1], r[2], per_kwh)
            k = len(head) + len(body)
            if n + k + 3 > len(buf):  # the reading, a comma, a closing brace and bracket
                break
            if used:
                buf[n] = 0x2C  # ,
                n += 1
            buf[n:n + len(head)] = head
            n += len(head)
            buf[n:n + len(body)] = body
            n += len(body)
            if head:
                buf[n] = 0x7D  # }
                n += 1
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
    return int(power_w * 10 + 0.5)
