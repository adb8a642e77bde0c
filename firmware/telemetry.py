# Telemetry payloads for v1/devices/me/telemetry (thingsboard-device-api.md §3).
#
# A reading is (ts_ms, pulse_index, power_dw): epoch ms (0 = not synced: the server stamps it
# on arrival), the cumulative pulse index, and power in tenths of a watt. Text is produced
# with integer math only, so a payload can never hold NaN, Infinity or null, and the energy is
# the exact decimal of index / pulses_per_kwh (pulses.energy_text).
#
# Keys: energy_kwh (running total, never a delta: a lost message loses no energy),
# power_w, pulses (the raw index, exact for audits). Health goes in its own message.

from firmware.pulses import energy_text

TOPIC = b"v1/devices/me/telemetry"


def _values(index, power_dw, per_kwh):
    return '{"energy_kwh":%s,"power_w":%d.%d,"pulses":%d}' % (
        energy_text(index, per_kwh), power_dw // 10, power_dw % 10, index)


def point(ts, index, power_dw, per_kwh):
    if ts:
        return '{"ts":%d,"values":%s}' % (ts, _values(index, power_dw, per_kwh))
    return _values(index, power_dw, per_kwh)


def batch(readings, per_kwh):
    """Payload for a list of readings: one object, or an array of {"ts","values"} points."""
    if len(readings) == 1:
        r = readings[0]
        return point(r[0], r[1], r[2], per_kwh).encode()
    return ("[" + ",".join(point(r[0], r[1], r[2], per_kwh) for r in readings) + "]").encode()


def health(ts, uptime_s, rssi_dbm, heap_free, missed_edges):
    vals = '{"uptime_s":%d,"heap_free":%d,"missed_edges":%d%s}' % (
        uptime_s, heap_free, missed_edges,
        ',"rssi_dbm":%d' % rssi_dbm if rssi_dbm is not None else "")
    if ts:
        return ('{"ts":%d,"values":%s}' % (ts, vals)).encode()
    return vals.encode()


def power_dw(power_w):
    # Tenths of a watt, rounded; negative or absurd values cannot come from pulse timing.
    return int(power_w * 10 + 0.5) if power_w > 0 else 0
