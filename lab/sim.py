"""`make sim`: the firmware on the MicroPython Unix port, metering a simulated household,
reporting to a local ThingsBoard-compatible server (tbsim).

    .venv/bin/python -m lab.sim [--meters N] [--load-w W] [--duration S] [--report FILE]
    make sim [METERS=N] [LOAD_W=W] [DURATION=S] [REPORT=FILE] [SPEEDUP=X]

Each virtual meter boots the same main.py and firmware/ as the ESP32 (as .mpy, with an
ESP32-sized heap), provisions itself, sends its supplier key and CUPS once, then publishes what
its pulse input sees. The load is a household day (night base load, morning and evening peaks,
appliances switching on and off) compressed SPEEDUP times; pulses are played in real time at
the instantaneous load, so the power each meter reports is real. LOAD_W gives a constant load.
Ctrl-C or DURATION ends the run: the loads stop, the meters publish their last reading, and
the summary compares pulses injected with the energy the server holds.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time

from lab.meterhost import PulseTrain, VirtualMeter, ensure_device_tree
from tbsim import Profile, TBSim
from firmware.cups import check_letters
from firmware.config import DEFAULT_SUPPLIER_ATTR
from firmware.log import mask

PER_KWH = 10000  # an LED meter: a pulse every 3.6 s at 100 W, several a second at 3 kW
KEY, SECRET = "sim-profile-key", "sim-profile-secret"


def household(seed, day_s):
    """Load in W at time t (s): one simulated day every day_s seconds."""
    rng = random.Random(seed)
    base = rng.uniform(120, 250)
    fridge_phase = rng.uniform(0, 1)
    events = []  # (start fraction of day, duration fraction, watts): kettles, ovens, washing
    for _ in range(rng.randint(6, 12)):
        start = rng.choice([rng.uniform(0.27, 0.36), rng.uniform(0.5, 0.58), rng.uniform(0.75, 0.92)])
        events.append((start, rng.uniform(0.004, 0.04), rng.choice([800, 1200, 2000, 2200, 3000])))

    def load(t):
        f = (t / day_s + 0.25) % 1.0  # the run starts at 06:00
        w = base + 150 * (1 + math.sin(2 * math.pi * (f * 40 + fridge_phase))) / 2  # fridge
        w += 250 * math.exp(-((f - 0.33) / 0.05) ** 2) + 600 * math.exp(-((f - 0.85) / 0.06) ** 2)
        for start, dur, watts in events:
            if start <= f < start + dur:
                w += watts
        return w

    return load


def cups(n):
    digits = "0031%012d" % n
    return "ES" + digits + check_letters(digits) + "0F"


class LiveView:
    def __init__(self, sim, meters, trains, loads, tty):
        self.sim, self.meters, self.trains, self.loads = sim, meters, trains, loads
        self.tty = tty
        self.start = time.time()
        self.events_seen = 0
        self.feed = []  # recent notable events, newest last
        self._lock = threading.Lock()

    def note(self, text):
        with self._lock:
            self.feed.append("%6.1fs %s" % (time.time() - self.start, text))
            del self.feed[:-8]
        if not self.tty:
            print(self.feed[-1], flush=True)

    def on_console(self, meter, line):
        if " state: " in line or "provision:" in line or "attributes:" in line or " E " in line:
            self.note("%s | %s" % (meter.name, line.split(" ", 1)[1]))

    def poll_server(self):
        for e in self.sim.events(since=self.events_seen):
            self.events_seen += 1
            if e["kind"] == "provision":
                req = e.get("request", {})
                sent = ["%s=%s" % (k, mask(v) if k in ("token", "provisionDeviceKey") else v)
                        for k, v in sorted(req.items()) if v not in ("", None, False)]
                self.note("server | provision request %s -> %s" % (" ".join(sent), e.get("status")))
            elif e["kind"] == "attributes":
                # The supplier key is a secret: shown masked, like every log line.
                shown = {k: mask(v) if k == DEFAULT_SUPPLIER_ATTR else v
                         for k, v in (e.get("values") or {}).items()}
                self.note("server | %s client attributes stored: %s" % (e.get("device"),
                                                                        json.dumps(shown)))

    def rows(self):
        out = ["%-20s %-10s %9s %9s %11s %9s %9s %6s" % (
            "meter", "state", "injected", "srv pulses", "srv kWh", "srv W", "true W", "msgs")]
        t = time.time() - self.start
        for m, train, load in zip(self.meters, self.trains, self.loads):
            dev = self.sim.device("meter-" + m.uid) or {}
            lt = dev.get("latestTelemetry", {})
            out.append("%-20s %-10s %9d %9s %11s %9s %9.0f %6s" % (
                "meter-" + m.uid, m.state or "boot", train.played, lt.get("pulses", "-"),
                lt.get("energy_kwh", "-"), lt.get("power_w", "-"),
                load(t) if train.is_alive() else 0, dev.get("telemetryCount", 0)))
        return out

    def draw(self):
        self.poll_server()
        if not self.tty:
            return
        lines = ["meter simulation: %d meter(s), %.0f s, Ctrl-C to stop" % (
            len(self.meters), time.time() - self.start), ""] + self.rows() + ["", "events:"] + \
            ["  " + f for f in self.feed]
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        sys.stdout.flush()


def summary(sim, meters, trains):
    result = []
    for m, train in zip(meters, trains):
        name = "meter-" + m.uid
        dev = sim.device(name) or {}
        lt = dev.get("latestTelemetry", {})
        pulses = lt.get("pulses")
        energy = lt.get("energy_kwh")
        injected = m.pulses_delivered
        powers = sorted(p["values"]["power_w"] for p in sim.telemetry(name)
                        if p["values"].get("power_w"))
        result.append({
            "meter": name, "pulses_injected": injected, "server_pulses": pulses,
            "server_energy_kwh": energy, "expected_energy_kwh": injected / PER_KWH,
            "agree": pulses == injected and energy is not None and abs(energy - injected / PER_KWH) < 1e-9,
            "telemetry_messages": dev.get("telemetryCount", 0),
            # the median of the non-zero power readings the server holds (W)
            "server_power_w_median": powers[len(powers) // 2] if powers else None,
            "attributes": dev.get("clientAttributes", {}).get("CUPs") is not None,
            "boots": m.boots,
        })
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=int(os.getenv("METERS") or 1))
    ap.add_argument("--load-w", type=float, default=float(os.getenv("LOAD_W") or 0) or None)
    ap.add_argument("--duration", type=float, default=float(os.getenv("DURATION") or 0) or None)
    ap.add_argument("--report", default=os.getenv("REPORT") or None)
    ap.add_argument("--speedup", type=float, default=float(os.getenv("SPEEDUP") or 288),
                    help="how much faster than real time the daily profile runs (288: a day in 5 min)")
    ap.add_argument("--seed", type=int, default=int(os.getenv("SEED") or 1))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (flash images, logs)")
    a = ap.parse_args(argv)

    device_dir = ensure_device_tree()
    work = tempfile.mkdtemp(prefix="meter-sim-")
    sim = TBSim(profiles=[Profile(KEY, SECRET)])
    sim.start()
    tty = sys.stdout.isatty()
    print("tbsim listening mqtt=127.0.0.1:%d http=127.0.0.1:%d (work dir %s)" % (
        sim.mqtt_port, sim.http_port, work), flush=True)
    meters, trains, loads = [], [], []
    view = LiveView(sim, meters, trains, loads, tty)
    day_s = 86400.0 / a.speedup
    try:
        for i in range(a.meters):
            uid = "5e0000%06d" % (i + 1)
            cfg = {"wifi_ssid": "home", "wifi_password": "sim-wifi-pass", "tb_host": "127.0.0.1",
                   "tb_port": sim.mqtt_port, "tb_tls": False, "tb_plain_ok": True,
                   "provision_key": KEY, "provision_secret": SECRET,
                   "supplier_key": "supplier-%04d-secret" % (i + 1), "cups": cups(i + 1),
                   "pulse_pin": 4, "pulses_per_kwh": PER_KWH, "publish_interval_s": 5,
                   "persist_interval_s": 10, "health_interval_s": 60,
                   "access_token": "sim-device-token-%04d" % (i + 1)}
            m = VirtualMeter(os.path.join(work, uid), cfg, device_dir, uid=uid, echo=view.on_console)
            load = (lambda t, w=a.load_w: w) if a.load_w else household(a.seed + i, day_s)
            meters.append(m)
            loads.append(load)
            trains.append(PulseTrain(m, PER_KWH, load))
            m.power_on()
        for t in trains:
            t.start()
        end = time.time() + a.duration if a.duration else None
        while end is None or time.time() < end:
            view.draw()
            time.sleep(0.5 if tty else 1.0)
    except KeyboardInterrupt:
        pass
    finally:
        for t in trains:
            t.stop()
        # Let every meter publish what it counted last (publish_interval_s is 5).
        deadline = time.time() + 20
        while time.time() < deadline and not all(r["agree"] for r in summary(sim, meters, trains)):
            view.poll_server()
            time.sleep(0.5)
        result = summary(sim, meters, trains)
        for m in meters:
            m.close()
        sim.stop()
        print("\nsummary:")
        for r in result:
            print("  %-20s injected %8d pulses  server %8s pulses  %12s kWh  %s" % (
                r["meter"], r["pulses_injected"], r["server_pulses"], r["server_energy_kwh"],
                "AGREE" if r["agree"] else "DISAGREE"))
        if a.report:
            with open(a.report, "w") as f:
                json.dump({"meters": result, "pulses_per_kwh": PER_KWH}, f, indent=2)
            print("report written to %s" % a.report)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if result and all(r["agree"] for r in result) else 1


if __name__ == "__main__":
    sys.exit(main())
