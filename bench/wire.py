"""wire_bytes_per_point: bytes on the meter's socket (both ways, MQTT or the TLS records carrying
it) per telemetry reading, counted by a proxy between the meter and tbsim.

single: 10 consecutive messages of one reading each in steady running (health values off, so
nothing else is on the wire), between two quiet moments (0.3 s after a PUBACK; the next message
is ~2 s away). batched: the firmware's backlog replay after a Wi-Fi outage of `outage_s`; the
window is the second 20-reading message alone, between the quiet gaps the firmware leaves
between backlog messages (500 ms). The baseline has no backlog, so no batched figure. TLS is
whatever tbsim and the meter's mbedTLS agree on (version and suite in the results' meta).
"""

import time

from bench.proxy import CountingProxy
from bench.rig import Steady, fail, together

BATCH = 20  # readings per backlog message (firmware/pipeline.py _BATCH_MAX)


def _quiet_snapshot(rig, m, proxy, count):
    """Wait until the server holds `count` readings, let the PUBACK through, then count bytes."""
    if not rig.wait_readings(m, count, 60):
        fail(m, "wire: %d readings expected" % count)
    time.sleep(0.3)
    return proxy.snapshot(), len(rig.readings(m))


def _run(rig, kind, tls, s, out):
    port = rig.sim.mqtts_port if tls else rig.sim.mqtt_port
    proxy = CountingProxy(port)
    cfg = rig.config(port=proxy.port, tls=tls, publish_interval_s=2, persist_interval_s=10,
                     health_interval_s=0, retry_max_s=10)
    m = rig.meter(kind, cfg, tag="-wire%s" % ("tls" if tls else ""))
    m.power_on()
    load = Steady(m, 1000.0 / 3600)  # 1 kW at 1000 imp/kWh
    load.start()
    mode = "tls" if tls else "plain"
    try:
        b0, n0 = _quiet_snapshot(rig, m, proxy, 3)
        b1, n1 = _quiet_snapshot(rig, m, proxy, 3 + s.wire_messages)
        out["%s_single" % mode] = round((b1 - b0) / (n1 - n0), 1)
        if tls and proxy.tls:
            out["_tls"] = "%s, cipher suite 0x%04x" % proxy.tls
        if kind != "firmware" or not s.outage_s:
            return
        m.set_net("down")
        time.sleep(s.outage_s)
        before = len(rig.readings(m))
        m.set_net("up")
        # First backlog message: the server count jumps by a whole batch at once.
        rig.need_readings(m, before + BATCH, 90, "wire: backlog replay")
        ba, na = _quiet_snapshot(rig, m, proxy, before + BATCH)
        bb, nb = _quiet_snapshot(rig, m, proxy, na + BATCH)
        out["%s_batched" % mode] = round((bb - ba) / (nb - na), 1)
        out["_batch_points"] = nb - na
    finally:
        load.stop()
        m.close()
        proxy.close()


def wire_bytes(rig, s):
    raw = {(kind, tls): {} for kind in ("firmware", "baseline") for tls in (False, True)}
    together(*[lambda k=k, b=b: _run(rig, k[0], k[1], s, b) for k, b in raw.items()])
    out = {"firmware": {}, "baseline": {}}
    meta = {}
    for (kind, _tls), box in raw.items():
        for k, v in box.items():
            if k == "_tls":
                meta["tls"] = v
            elif k == "_batch_points":
                out[kind]["batch_points"] = v
            else:
                out[kind].setdefault("wire_bytes_per_point", {})[k] = v
    return out, meta
