"""`make sim`: the firmware on the MicroPython Unix port, metering a simulated household,
reporting to a local ThingsBoard-compatible server (tbsim).

    .venv/bin/python -m lab.sim [--meters N] [--load-w W] [--duration S] [--speedup X]
                                [--report FILE.json] [--ota]
    make sim [METERS=N] [LOAD_W=W] [DURATION=S] [SPEEDUP=X] [REPORT=FILE.json] [OTA=1]

Each virtual meter boots the same main.py and firmware/ as the ESP32 (as .mpy, with an
ESP32-sized heap), provisions itself, sends its supplier key and CUPS once, then publishes what
its pulse input sees. The load is a household day (night base load, morning and evening peaks,
appliances switching on and off) compressed SPEEDUP times; pulses are played in real time at
the instantaneous load, so the power each meter reports is real. LOAD_W gives a constant load.

On a terminal the screen is redrawn twice a second: a table of every meter, a legend, the boot
and provisioning of each meter (kept in view), and the latest events. Anywhere else (a pipe, a
log file, CI) every event is printed as one line when it happens: boot states, the provisioning
exchange, the attributes as the server stored them, each reading arriving at the server beside
the true load. Ctrl-C or DURATION ends the run: the loads stop, the meters publish their last
reading, and the summary compares the pulses played with the energy the server holds. The
report (REPORT, default run/sim/sim.json) and beside it one chart per meter
(<report>-meter-<uid>.png: lab/charts.py) are written at the end.

OTA=1 adds a firmware rollout (README: firmware updates): before the meters boot, a package of
their tree stamped with another version ("<version>+ota") is built as `make ota-package` builds
one (tools/ota_package.py); once every meter is in the run state it is uploaded to the server
and assigned to the meters' profile, as a utility does in ThingsBoard, and the events show each
meter downloading, switching and reporting the new version. The run then succeeds only if every
meter reports it.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

from lab.meterhost import ROOT, PulseTrain, VirtualMeter, ensure_device_tree
from tbsim import Profile, TBSim
from firmware.cups import check_letters
from firmware.config import DEFAULT_SUPPLIER_ATTR
from firmware.log import mask
from tools import build_device, ota_package

PER_KWH = 10000  # an LED meter: a pulse every 3.6 s at 100 W, several a second at 3 kW
PUBLISH_S, PERSIST_S = 5, 10  # the meters' publish_interval_s and persist_interval_s
START_HOUR = 6.0  # the household day starts at 06:00
KEY, SECRET = "sim-profile-key", "sim-profile-secret"
DEFAULT_REPORT = os.path.join(ROOT, "run", "sim", "sim.json")


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
        f = (t / day_s + START_HOUR / 24) % 1.0
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


def meter_config(i, mqtt_port):
    """(uid, config.json) of the i-th virtual meter (from 0)."""
    return "5e0000%06d" % (i + 1), {
        "wifi_ssid": "home", "wifi_password": "sim-wifi-pass", "tb_host": "127.0.0.1",
        "tb_port": mqtt_port, "tb_tls": False, "tb_plain_ok": True,
        "provision_key": KEY, "provision_secret": SECRET,
        "supplier_key": "supplier-%04d-secret" % (i + 1), "cups": cups(i + 1),
        "pulse_pin": 4, "pulses_per_kwh": PER_KWH, "publish_interval_s": PUBLISH_S,
        "persist_interval_s": PERSIST_S, "health_interval_s": 60,
        "access_token": "sim-device-token-%04d" % (i + 1)}


class Rollout:
    """OTA=1: the package (built now, before the meters boot), its upload and assignment once
    every meter runs, and which meters report it."""

    def __init__(self, device_dir, work):
        title, version, _source = build_device.firmware_version()
        self.title, self.version = title, version + "+ota"
        tree = ota_package.stamped(device_dir, os.path.join(work, "ota-tree"), title, self.version)
        self.data = ota_package.pack(tree, title, self.version)
        self.assigned = None  # host time of the assignment
        self.done = None  # host time every meter reported the new version
        self.updated = set()  # meters reporting it

    def describe(self):
        import hashlib
        return "ota | package %s %s: %d bytes, SHA256 %s (tools/ota_package.py)" % (
            self.title, self.version, len(self.data), hashlib.sha256(self.data).hexdigest()[:16])

    def step(self, sim, view):
        tracks = view.tracks
        if self.assigned is None:
            if tracks and all(any(s == "run" for _t, s in t.states) for t in tracks):
                info = sim.add_ota_package(self.title, self.version, data=self.data)
                sim.assign_ota(profile=KEY, firmware=info["id"])
                self.assigned = time.time()
                view.note("server | OTA package %s %s uploaded and assigned to profile %s" % (
                    self.title, self.version, KEY))
            return
        for t in tracks:
            # Updated as ThingsBoard's dashboard has it: the new version reported, and UPDATED
            # (the meter's own report once the new firmware has proved itself on trial).
            lt = (sim.device(t.name) or {}).get("latestTelemetry", {})
            ver = lt.get("current_fw_version")
            if ver == self.version and lt.get("fw_state") == "UPDATED" and \
                    t.name not in self.updated:
                self.updated.add(t.name)
                view.note("ota | %s reports firmware %s (%d of %d meters)" % (
                    t.name, ver, len(self.updated), len(tracks)))
        if self.done is None and len(self.updated) == len(tracks):
            self.done = time.time()
            view.note("ota | rollout done: all %d meter(s) report firmware %s, %.0f s after the "
                      "assignment" % (len(tracks), self.version, self.done - self.assigned))

    def status(self, n):
        if self.assigned is None:
            return "OTA %s: waiting for every meter to run" % self.version
        return "OTA %s: %d of %d meter(s) updated" % (self.version, len(self.updated), n)


class Clock:
    """Seconds since the loads started and, when a household day runs SPEEDUP times faster than
    real time, the simulated time of day (speedup None: a constant load, no day to show)."""

    def __init__(self, speedup=None, t0=None):
        self.speedup = speedup
        self.t0 = time.time() if t0 is None else t0

    def elapsed(self, at=None):
        return (time.time() if at is None else at) - self.t0

    def hours(self, at=None):
        """Simulated hours since midnight of day 1 (06:00 at the start)."""
        return START_HOUR + self.elapsed(at) * self.speedup / 3600.0

    def time_of_day(self, at=None):
        h = self.hours(at)
        minutes = int(h * 60) % 1440
        day = int(h // 24) + 1
        return ("day %d " % day if day > 1 else "") + "%02d:%02d" % (minutes // 60, minutes % 60)

    def stamp(self, at=None):
        """What every event line starts with: '  12.3s' and, for a household day, '07:41'."""
        text = "%7.1fs" % max(0.0, self.elapsed(at))
        return text + " " + self.time_of_day(at) if self.speedup else text


def legend(clock, per_kwh=PER_KWH, publish_s=PUBLISH_S, persist_s=PERSIST_S):
    lines = [
        "played     edges played into the meter's pulse input so far: what it has counted",
        "           (the hardware counter misses none)",
        "on flash   the pulse index the meter saved last (read from its flash image); saved every",
        "           %d s (persist_interval_s), it is what a power cut falls back to" % persist_s,
        "at server  the index of the newest reading at the server. A reading carries the index on",
        "           flash, never a newer one, so that the server never sees it go backwards after a",
        "           power cut: it trails 'played' by up to %d s + %d s of pulses. Not a loss: the" % (
            persist_s, publish_s),
        "           summary, after the last save and publish, compares the two",
        "kWh, W     energy (index / %d imp/kWh) and power of that reading; true W: the load now" % (
            per_kwh),
    ]
    if clock.speedup:
        lines.append("time       seconds since the loads started, and the simulated time of day "
                     "(a day every %.0f s)" % (86400.0 / clock.speedup))
    else:
        lines.append("time       seconds since the loads started")
    return lines


class Track:
    """One meter as the sim sees it: what was played into it, what the server received, and the
    story of its boot, for the live view, the summary and the chart."""

    def __init__(self, meter, train, load):
        self.meter, self.train, self.load = meter, train, load
        self.name = "meter-" + meter.uid
        self.states = []  # (host time, state entered)
        self.provisioned = None  # the meter's own words on its provisioning
        self.stored = None  # the attributes as the server stored them
        self.flash_index = None  # None until the first read of a saved index
        self.readings = []  # (host time of the reading, power_w, energy_kwh, pulses)
        self.played = []  # (host time, pulses played so far)
        self.seen = 0  # entries of the server's telemetry list already shown
        self.meter_on = None  # host time of the power-on


_STATE = re.compile(r" state: \S+ -> (\S+)")
_STORY_LINES = 3  # per meter in boot_story()


class LiveView:
    def __init__(self, sim, clock, tty, out=None, per_kwh=PER_KWH):
        self.sim, self.clock, self.tty = sim, clock, tty
        self.out = out or sys.stdout
        self.per_kwh = per_kwh
        self.tracks = []
        self.loads_off = None  # host time the loads stopped
        self.events_seen = 0
        self.feed = []  # recent events, newest last (the terminal view)
        self._pending = []  # (host time, sequence, line) noted, not yet shown
        self.rollout = None  # OTA=1: the Rollout, for the terminal's heading
        self._seq = 0
        self._lock = threading.Lock()

    def track(self, name):
        for t in self.tracks:
            if t.name == name:
                return t
        return None

    def note(self, text, at=None):
        """One event, stamped with when it happened (host time; now when not given)."""
        at = time.time() if at is None else at
        with self._lock:
            self._seq += 1
            self._pending.append((at, self._seq, "%s %s" % (self.clock.stamp(at), text)))

    def flush(self):
        """The events noted since the last flush, in the order they happened: the meters' console
        lines arrive on their own threads at once, the server's events at the next poll."""
        with self._lock:
            lines = [l for _at, _seq, l in sorted(self._pending)]
            self._pending = []
            self.feed.extend(lines)
            del self.feed[:-200]
        if lines and not self.tty:
            self.out.write("".join(l + "\n" for l in lines))
            self.out.flush()

    def start(self):
        """Before the meters boot: what the columns and times mean."""
        if not self.tty:
            self.out.write("legend:\n" + "".join("  %s\n" % l for l in legend(self.clock, self.per_kwh)))
            self.out.flush()

    # --- what the meters say (their reader threads call this) --------------------------------
    def on_console(self, meter, line):
        text = line.split(" ", 1)[1] if " " in line else line
        track = self.track("meter-" + meter.uid)
        state = _STATE.search(line)
        if state and track is not None:
            track.states.append((time.time(), state.group(1)))
        if "provision:" in text and track is not None and (" SUCCESS" in text or " E " in line):
            track.provisioned = text.split("provision: ", 1)[1]
        if line.startswith("bootslot:"):  # the boot code prints, without the log's prefix
            text = line
        if (" state: " in line or "provision:" in line or "attributes:" in line or " E " in line
                or " W " in line or " ota: " in line or text.startswith("bootslot:")
                or " remote: firmware" in line or "meter firmware starting" in line):
            self.note("meter-%s | %s" % (meter.uid, text))

    # --- what the server holds -----------------------------------------------------------------
    def poll_server(self):
        for e in self.sim.events(since=self.events_seen):
            self.events_seen += 1
            if e["kind"] == "provision":
                req = e.get("request") or {}
                # Shown as the server recorded it: tbsim's event has the key, the secret and
                # the credentials masked already (tbsim/sim.py _provision, with the firmware's
                # rule). Masking "si...et" again would show "..." (under 8 characters), not
                # the masked value. Empty fields are left out.
                sent = ["%s=%s" % (k, v) for k, v in sorted(req.items())
                        if v not in ("", None, False)]
                self.note("server | provision request %s -> %s" % (" ".join(sent), e.get("status")),
                          e.get("t"))
            elif e["kind"] == "attributes":
                # The supplier key is a secret: shown masked, like every log line.
                shown = {k: mask(v) if k == DEFAULT_SUPPLIER_ATTR else v
                         for k, v in (e.get("values") or {}).items()}
                track = self.track(e.get("device"))
                if track is not None:
                    track.stored = json.dumps(shown)
                self.note("server | %s client attributes stored: %s" % (e.get("device"),
                                                                        json.dumps(shown)), e.get("t"))
        for track in self.tracks:
            self._new_readings(track)
        self.flush()

    def _new_readings(self, track):
        # The server keeps a device's last 100000 entries (tbsim/store.py): at one reading
        # every 5 s, six days of them, far more than a sim runs; so its list only grows here.
        series = self.sim.telemetry(track.name)
        fresh = series[track.seen:]
        track.seen = len(series)
        for entry in fresh:
            v = entry.get("values") or {}
            if "fw_state" in v:  # a firmware update's progress (ThingsBoard's, then the meter's)
                self.note("server | %s fw_state %s%s" % (
                    track.name, v["fw_state"], " (%s)" % v["fw_error"] if v.get("fw_error") else ""))
            if "pulses" not in v:
                continue  # a health message
            at = entry["ts"] / 1000.0
            track.readings.append((at, v.get("power_w"), v.get("energy_kwh"), v["pulses"]))
            on = self.clock.elapsed(at) >= 0 and (self.loads_off is None or at < self.loads_off)
            true_w = track.load(self.clock.elapsed(at)) if on else 0
            # Stamped when it arrived (now, within a poll), so that the lines stay in order; the
            # true load is the one at the time the meter took the reading.
            self.note("server | %s reading: %s kWh, %s W, index %s (as on flash) | true load %.0f W, "
                      "played %d" % (track.name, v.get("energy_kwh"), v.get("power_w"), v["pulses"],
                                     true_w, track.meter.pulses_delivered))

    def sample(self):
        now = time.time()
        for track in self.tracks:
            track.played.append((now, track.meter.pulses_delivered))

    # --- the terminal view ---------------------------------------------------------------------
    def rows(self):
        out = ["%-20s %-10s %8s %8s %9s %10s %8s %7s %5s" % (
            "meter", "state", "played", "on flash", "at server", "kWh", "W", "true W", "msgs")]
        t = self.clock.elapsed()
        for track in self.tracks:
            dev = self.sim.device(track.name) or {}
            lt = dev.get("latestTelemetry", {})
            out.append("%-20s %-10s %8d %8s %9s %10s %8s %7.0f %5s" % (
                track.name, track.meter.state or "boot", track.meter.pulses_delivered,
                "-" if track.flash_index is None else track.flash_index, lt.get("pulses", "-"),
                lt.get("energy_kwh", "-"), lt.get("power_w", "-"),
                track.load(t) if track.train.is_alive() else 0, dev.get("telemetryCount", 0)))
        return out

    def boot_story(self):
        """Per meter: its boot states in order, how it was provisioned, the attributes stored.
        These scroll out of the events feed within seconds; here they stay."""
        lines = []
        for track in self.tracks:
            states = [s for _t, s in track.states]
            path = " -> ".join((["boot"] if states else []) + states[-9:])
            if len(states) > 9:
                path = "... -> " + path
            took = ""
            if "run" in states and track.meter_on:
                first_run = [at for at, s in track.states if s == "run"][0]
                took = " (run %.1f s after power-on)" % (first_run - track.meter_on)
            lines.append("  %-20s %s%s" % (track.name, path or "powered on", took))
            lines.append("  %-20s provisioning: %s" % ("", track.provisioned or "-"))
            lines.append("  %-20s attributes at the server: %s" % ("", track.stored or "-"))
        return lines

    def screen(self, size=None):
        cols, height = size or shutil.get_terminal_size((120, 40))
        head = ["meter simulation: %d meter(s), %s; Ctrl-C to stop" % (
            len(self.tracks), "simulated %s, %.0f s in" % (self.clock.time_of_day(),
                                                            self.clock.elapsed())
            if self.clock.speedup else "%.0f s in" % self.clock.elapsed()), ""]
        if self.rollout is not None:
            head.insert(1, self.rollout.status(len(self.tracks)))
        body = head + self.rows() + [""] + ["  " + l for l in legend(self.clock, self.per_kwh)]
        story = self.boot_story()
        room = height - len(body) - 6  # two headings, two blank lines, at least two events
        if len(story) > room:  # whole meters only, and a line saying how many are left out
            shown = max(0, room - 1) // _STORY_LINES
            story = story[:shown * _STORY_LINES] + [
                "  ... and %d more meter(s)" % (len(self.tracks) - shown)]
        body += ["", "boot and provisioning:"] + story + ["", "events:"]
        with self._lock:
            feed = self.feed[-max(1, height - len(body) - 1):]
        body += ["  " + f for f in feed]
        return [l[:cols] for l in body[:height - 1]]

    def draw(self):
        if self.tty:
            self.out.write("\x1b[H\x1b[2J" + "\n".join(self.screen()) + "\n")
            self.out.flush()


class FlashWatcher(threading.Thread):
    """Reads each meter's saved pulse index from a copy of its flash image, one meter a second
    (each read is a MicroPython process: lab/flashimg.py, the meter's own LittleFS code)."""

    def __init__(self, tracks, every_s=1.0):
        super().__init__(daemon=True)
        self.tracks, self.every_s = tracks, every_s
        self._halt = threading.Event()

    def run(self):
        i = 0
        while not self._halt.wait(self.every_s):
            if not self.tracks:
                continue
            track = self.tracks[i % len(self.tracks)]
            i += 1
            if not track.meter.powered:
                continue
            try:
                rec = track.meter.record("pulses")
            except Exception:  # a snapshot caught mid-write, a meter closing: next time
                continue
            if isinstance(rec, dict) and isinstance(rec.get("index"), int):
                track.flash_index = rec["index"]

    def stop(self):
        self._halt.set()
        self.join(10)


def summary(sim, tracks, loads_off=None):
    result = []
    for track in tracks:
        m, name = track.meter, track.name
        dev = sim.device(name) or {}
        lt = dev.get("latestTelemetry", {})
        pulses = lt.get("pulses")
        energy = lt.get("energy_kwh")
        injected = m.pulses_delivered
        # Readings taken while the load ran: after it stops, the power decays towards 0 W.
        powers = sorted(p["values"]["power_w"] for p in sim.telemetry(name)
                        if p["values"].get("power_w")
                        and (loads_off is None or p["ts"] < loads_off * 1000))
        result.append({
            "meter": name, "pulses_injected": injected, "server_pulses": pulses,
            "server_energy_kwh": energy, "expected_energy_kwh": injected / PER_KWH,
            "agree": pulses == injected and energy is not None and abs(energy - injected / PER_KWH) < 1e-9,
            "telemetry_messages": dev.get("telemetryCount", 0),
            # the median of the non-zero power readings the server holds, taken while the
            # load was on (W)
            "server_power_w_median": powers[len(powers) // 2] if powers else None,
            "attributes": dev.get("clientAttributes", {}).get("CUPs") is not None,
            "boots": m.boots,
            "firmware": lt.get("current_fw_version"),
        })
    return result


def chart_path(report, uid):
    stem = report[:-5] if report.endswith(".json") else report
    return "%s-meter-%s.png" % (stem, uid)


def draw_charts(view, report, end):
    """One chart per meter beside the report: returns {meter name: path}."""
    from lab import charts
    clock = view.clock
    x = clock.hours if clock.speedup else clock.elapsed
    out = {}
    for track in view.tracks:
        # The true load on a fine grid (it is a function of time), up to when the loads stopped.
        span = max(1.0, end - clock.t0)
        grid = [clock.t0 + span * i / 1500.0 for i in range(1501)]
        truth = [(x(t), track.load(t - clock.t0)) for t in grid]
        readings = [(x(at), w, kwh) for at, w, kwh, _p in track.readings
                    if w is not None and kwh is not None]
        played = [(x(at), p) for at, p in track.played]
        path = chart_path(report, track.meter.uid)
        charts.meter_chart(path, "%s: %s" % (track.name, "a household day, %g times real time" % (
            clock.speedup) if clock.speedup else "a constant load"), truth, readings, played,
            view.per_kwh, clock_hours=bool(clock.speedup))
        out[track.name] = path
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=int(os.getenv("METERS") or 1))
    ap.add_argument("--load-w", type=float, default=float(os.getenv("LOAD_W") or 0) or None)
    ap.add_argument("--duration", type=float, default=float(os.getenv("DURATION") or 0) or None)
    ap.add_argument("--report", default=os.getenv("REPORT") or DEFAULT_REPORT,
                    help="the summary as JSON; the charts go beside it (default run/sim/sim.json)")
    ap.add_argument("--speedup", type=float, default=float(os.getenv("SPEEDUP") or 288),
                    help="how much faster than real time the daily profile runs (288: a day in 5 min)")
    ap.add_argument("--seed", type=int, default=int(os.getenv("SEED") or 1))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (flash images, logs)")
    ap.add_argument("--ota", action="store_true", default=os.getenv("OTA") not in (None, "", "0"),
                    help="roll out a firmware update once every meter runs (make sim OTA=1)")
    a = ap.parse_args(argv)

    device_dir = ensure_device_tree()
    work = tempfile.mkdtemp(prefix="meter-sim-")
    sim = TBSim(profiles=[Profile(KEY, SECRET)])
    sim.start()
    tty = sys.stdout.isatty()
    print("tbsim listening mqtt=127.0.0.1:%d http=127.0.0.1:%d (work dir %s)" % (
        sim.mqtt_port, sim.http_port, work), flush=True)
    clock = Clock(None if a.load_w else a.speedup)
    view = LiveView(sim, clock, tty)
    view.start()
    day_s = 86400.0 / a.speedup
    watcher = FlashWatcher(view.tracks)
    result, end = [], time.time()
    rollout = None
    try:
        if a.ota:
            rollout = view.rollout = Rollout(device_dir, work)
            view.note(rollout.describe())
            view.flush()
        for i in range(a.meters):
            uid, cfg = meter_config(i, sim.mqtt_port)
            m = VirtualMeter(os.path.join(work, uid), cfg, device_dir, uid=uid, echo=view.on_console)
            load = (lambda t, w=a.load_w: w) if a.load_w else household(a.seed + i, day_s)
            view.tracks.append(Track(m, PulseTrain(m, PER_KWH, load), load))
        clock.t0 = time.time()  # t = 0 of every load: the trains start now
        for track in view.tracks:
            track.meter_on = time.time()
            track.meter.power_on()
            track.train.start()
        watcher.start()
        end = clock.t0 + a.duration if a.duration else None
        tick = 0
        while end is None or time.time() < end:
            # The server is polled 4 times a second (events print within 0.25 s, in order);
            # the terminal is redrawn twice a second, the chart's samples taken once.
            view.poll_server()
            if rollout is not None:
                rollout.step(sim, view)
                view.flush()
            if tick % 4 == 0:
                view.sample()
            if tty and tick % 2 == 0:
                view.draw()
            tick += 1
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        end = view.loads_off = time.time()
        for track in view.tracks:
            track.train.stop()
        # Let every meter save and publish what it counted last (persist_interval_s 10,
        # publish_interval_s 5).
        deadline = time.time() + 2 * (PERSIST_S + PUBLISH_S)
        while time.time() < deadline and not all(r["agree"] for r in summary(sim, view.tracks)):
            view.poll_server()
            view.sample()
            time.sleep(0.5)
        view.poll_server()
        view.sample()
        if rollout is not None:
            rollout.step(sim, view)
        watcher.stop()
        result = summary(sim, view.tracks, view.loads_off)
        for track in view.tracks:
            track.meter.close()
        sim.stop()
        view.flush()
        if tty:  # the last screen stays; what happened at boot is repeated below it, once
            print("\nboot and provisioning:\n" + "\n".join(view.boot_story()))
        print("\nsummary:")
        for r in result:
            print("  %-20s injected %8d pulses  server %8s pulses  %12s kWh  %s" % (
                r["meter"], r["pulses_injected"], r["server_pulses"], r["server_energy_kwh"],
                "AGREE" if r["agree"] else "DISAGREE"))
        if rollout is not None:
            for r in result:
                r["updated"] = r["meter"] in rollout.updated
            print("  OTA %s: %d of %d meter(s) report it%s" % (
                rollout.version, sum(r["updated"] for r in result), len(result),
                "" if rollout.done is None else ", %.0f s after the assignment" % (
                    rollout.done - rollout.assigned)))
        if view.tracks:
            os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
            paths = draw_charts(view, a.report, end)
            for r in result:
                r["chart"] = os.path.basename(paths[r["meter"]])
            with open(a.report, "w") as f:
                json.dump({"meters": result, "pulses_per_kwh": PER_KWH,
                           "speedup": clock.speedup, "duration_s": round(end - clock.t0, 1)},
                          f, indent=2)
            print("report written to %s; charts: %s" % (
                _shown(a.report), ", ".join(_shown(p) for p in paths.values())))
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if result and all(r["agree"] and r.get("updated", True) for r in result) else 1


def _shown(path):
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    return path if rel.startswith("..") else rel


if __name__ == "__main__":
    sys.exit(main())
