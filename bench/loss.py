"""pulse_loss: edges played on the pulse input minus the pulse index the server ends with.

Each run is a fresh meter under the probe (for the stall injector) at a constant rate, with
main-loop stalls of S seconds injected 1 s after the edges start and then every S + 2 s
(3 stalls). A stall blocks the main thread in a C call that runs no interrupt handler, as a TLS
handshake or a flash write does on the ESP32, while the pulse hardware keeps counting; edges
then wait in MicroPython's scheduler queue, and those that do not fit (4 here, 8 on an ESP32)
reach only the hardware counter. Paths: the firmware with the hardware counter (PCNT), the
firmware interrupt-only (pulse_hw_counter off), the baseline (interrupt-only by design).
pulse_loss: pulse_min_interval_ms 0 and a clean signal, the figure is about stalls.
pulse_loss_bounce: every pulse followed by 2 bounce edges 0.5-5 ms later (lab/meterhost.py
Bounce), pulse_min_interval_ms 12 (a pulse every 20 ms at 50/s: bounce and pulses each clear of
the window by a third of it, firmware/pulses.py); negative figures are bounce counted as pulses.
The run ends when the server holds every edge, or after persist_interval_s plus two publish
intervals with nothing more arriving.
"""

import os
import time

from bench.heap import BAD
from bench.rig import INDEX0, Steady, bench_times, together
from lab.meterhost import Bounce

PER_KWH = 1000
PATHS = (("firmware", "hw_counter"), ("firmware", "interrupt_only"), ("baseline", "interrupt_only"))


def _stall_plan(stall_s, window_s):
    if stall_s <= 0:
        return [], window_s
    times = [1.0 + i * (stall_s + 2.0) for i in range(3)]
    return times, max(window_s, times[-1] + stall_s + 1.0)


def loss_run(rig, kind, path, rate, stall_s, s, bounce=False):
    cfg = rig.config(publish_interval_s=2, persist_interval_s=10, health_interval_s=0,
                     pulse_min_interval_ms=12 if bounce else 0, pulses_per_kwh=PER_KWH,
                     pulse_hw_counter="auto" if path == "hw_counter" else "off")
    m = rig.meter(kind, cfg, probe=True, tag="-bounce" if bounce else "-loss")
    ctl = os.path.join(m.dir, "stall")
    m.extra_env["BENCH_STALL"] = ctl
    m.power_on()
    result = {"ok": False}
    try:
        if not rig.wait_readings(m, 1, 40):
            result["console"] = m.text()[-800:]
            return result
        plan, window = _stall_plan(stall_s, s.loss_window_s)
        player = Steady(m, rate, window, Bounce(edges=2, seed=rate) if bounce else None)
        player.start()
        while player.start_time is None:
            time.sleep(0.001)
        for at in plan:
            time.sleep(max(0.0, player.start_time + at - time.time()))
            with open(ctl + ".tmp", "w") as f:
                f.write("%d" % (stall_s * 1000))
            os.replace(ctl + ".tmp", ctl)
        player.join()
        expected = INDEX0 + m.pulses_delivered
        settle = 10 + 2 * 2 + stall_s + 2
        rig.sim.wait_for(lambda: (rig.readings(m) or [{}])[-1].get("values", {}).get("pulses")
                         == expected, settle, 0.05)
        readings = rig.readings(m)
        last = readings[-1]["values"]["pulses"]
        result.update(ok=True, loss=expected - last, played=m.pulses_delivered,
                      stalls=len(bench_times(m, "stall_end")), planned=len(plan),
                      mismatch=sum(1 for r in readings
                                   if r["values"]["energy_kwh"] != r["values"]["pulses"] / PER_KWH),
                      bad=bool(BAD.search(m.text())))
        return result
    finally:
        m.close()


def _into(box, fn):
    try:
        box.update(fn())
    except Exception as e:  # one run that breaks is reported; the others still count
        box["error"] = "%s: %s" % (type(e).__name__, e)


def pulse_loss(rig, s):
    """{kind: {"pulse_loss": {path: {rate: {stall: loss}}}, "pulse_loss_bounce": (the same),
    "energy_mismatch_readings": n}}"""
    out = {"firmware": {"pulse_loss": {}, "pulse_loss_bounce": {}, "energy_mismatch_readings": 0},
           "baseline": {"pulse_loss": {}, "pulse_loss_bounce": {}, "energy_mismatch_readings": 0}}
    problems = []
    for stall in s.loss_stalls:
        for key, rates, bounce in (("pulse_loss", s.loss_rates, False),
                                   ("pulse_loss_bounce", s.bounce_rates, True)):
            runs = [(kind, path, rate, {}) for kind, path in PATHS for rate in rates]
            together(*[lambda k=k, p=p, r=r, b=b: _into(
                b, lambda: loss_run(rig, k, p, r, stall, s, bounce)) for k, p, r, b in runs])
            for kind, path, rate, box in runs:
                if not box.get("ok") or box.get("bad") or box.get("stalls") != box.get("planned"):
                    problems.append((key, kind, path, rate, stall, box))
                    continue
                table = out[kind][key].setdefault(path, {}).setdefault("%g" % rate, {})
                table["%g" % stall] = box["loss"]
                out[kind]["energy_mismatch_readings"] += box["mismatch"]
    return out, problems
