"""`make fleet`: a fleet of virtual meters rides out a server outage.

    .venv/bin/python -m bench.fleet [--meters 200] [--outage 60] [--interval 5]
                                    [--retry-min 2] [--retry-max 300] [--report FILE.json]
    make fleet [METERS=N] [OUTAGE=S] [REPORT=FILE.json]

N meters (the real firmware on the MicroPython Unix port, lab/meterhost.py) boot a few per
second, provision themselves into tbsim, send their attributes and publish readings
while a constant load plays pulses into each. Then the server goes away: its MQTT listener is
closed (connections are refused, as from a dead host) for --outage seconds, and comes back on
the same port with the same devices and credentials (--restart same: TBSim.stop()/start();
--restart state-file: a new TBSim loaded from the state file the old one saved).

Measured from the server's side: CONNECT attempts per second after the restart (peak and
distribution, next to what firmware/backoff.py predicts for the same settings), the time
until every meter has published again, and readings lost: every meter's series on the server
must hold one reading per publish interval from its first to its last, and its last index
must equal the pulses played into it. Prints a summary; --report also writes it as JSON, and
a chart of the reconnects per second and of when each meter was back is drawn beside it
(--chart; default run/fleet/fleet.png, lab/charts.py).
Exit code 0 when no reading was lost and every meter came back within the backoff's bound.
"""

import argparse
import concurrent.futures
import json
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time

from bench import fleetstats
from lab.meterhost import ROOT, PulseTrain, VirtualMeter, ensure_device_tree
from tbsim import Profile, TBSim
from firmware.config import validate
from firmware.cups import check_letters

PER_KWH = 1000
SLACK_S = 10.0  # on top of the backoff bound: connect, subscribe, the first publish, 2 busy cores


def crashed(console):
    """The firmware died at least once: an uncaught exception, the heap exhausted."""
    return "Traceback" in console or "MemoryError" in console


def cups(n):
    digits = "0099%012d" % n
    return "ES" + digits + check_letters(digits) + "0F"


def uid_of(i):
    return "f1ee7%07x" % (i + 1)


class Fleet:
    """The server, the meters and their loads, and what happened to them."""

    def __init__(self, meters, workdir, interval_s=5, retry_min_s=2, retry_max_s=300,
                 boot_rate=5.0, seed=1, restart="same", device_dir=None, log=print):
        if restart not in ("same", "state-file"):
            raise ValueError("restart must be 'same' or 'state-file'")
        self.n = meters
        self.dir = workdir
        self.interval_s = interval_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.boot_rate = boot_rate
        self.rng = random.Random(seed)
        self.restart_mode = restart
        self.device_dir = device_dir or ensure_device_tree()
        self.log = log
        # Made per run: nothing secret is written anywhere but the meters' own flash images.
        self.key, self.secret = "fleet-" + secrets.token_hex(6), secrets.token_hex(12)
        self.state_file = (os.path.join(workdir, "tbsim-state.json") if restart == "state-file"
                           else None)
        self.sim = None
        self.meters = []
        self.trains = []
        self._events = []  # every tbsim event seen, across restarts
        self._since = 0
        self.marks = {}  # phase name -> host time
        self.caught = {}  # device -> when its backlog was replayed after the restart

    # --- the server --------------------------------------------------------------------------
    def _new_sim(self, port=0):
        return TBSim(profiles=[Profile(self.key, self.secret)], provision_close_s=5.0,
                     state_file=self.state_file, mqtt_port=port)

    def poll_events(self):
        if self.sim is None:
            return self._events
        items, nxt = self.sim.store.events(None, self._since)
        self._events.extend(items)
        self._since = nxt
        return self._events

    def refused(self):
        """True when nothing listens on the MQTT port any more."""
        try:
            socket.create_connection(("127.0.0.1", self.port), 2).close()
            return False
        except ConnectionRefusedError:
            return True

    # --- the meters --------------------------------------------------------------------------
    def _config(self, i):
        return {"wifi_ssid": "fleet-net", "wifi_password": secrets.token_hex(8),
                "tb_host": "127.0.0.1", "tb_port": self.port, "tb_tls": False, "tb_plain_ok": True,
                "provision_key": self.key, "provision_secret": self.secret,
                "supplier_key": secrets.token_hex(10), "cups": cups(i + 1), "pulse_pin": 4,
                "pulses_per_kwh": PER_KWH, "publish_interval_s": self.interval_s,
                "persist_interval_s": 10, "health_interval_s": 0,
                "retry_min_s": self.retry_min_s, "retry_max_s": self.retry_max_s}

    def names(self):
        return ["meter-" + m.uid for m in self.meters]

    def start(self):
        self.port = 1883  # for the check; the real port once tbsim listens
        _cfg, errors = validate(self._config(0))  # the meter's own rules: fail here, not 200 times
        if errors:
            raise ValueError("meter config: " + "; ".join(errors))
        self.sim = self._new_sim().start()
        self.port = self.sim.mqtt_port
        self.log("fleet: tbsim on 127.0.0.1:%d; work dir %s" % (self.port, self.dir))
        # Each flash image is written by a MicroPython process: a few at a time.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            self.meters = list(pool.map(
                lambda i: VirtualMeter(os.path.join(self.dir, uid_of(i)), self._config(i),
                                       self.device_dir, uid=uid_of(i)), range(self.n)))
        # A household's constant load, different for each meter: 0.15 to 0.8 pulses a second.
        loads = [self.rng.uniform(500.0, 3000.0) for _ in self.meters]
        self.trains = [PulseTrain(m, PER_KWH, lambda t, w=w: w) for m, w in zip(self.meters, loads)]
        self.marks["boot"] = time.time()
        for m, train in zip(self.meters, self.trains):
            m.power_on()
            train.start()
            time.sleep(1.0 / self.boot_rate)
        self.log("fleet: %d meters powered on in %.0f s" % (
            self.n, time.time() - self.marks["boot"]))

    def publishing_since(self, t0):
        """{device: first accepted telemetry after t0}."""
        return fleetstats.first_after(self.poll_events(), t0, fleetstats.is_telemetry)

    def crashed(self):
        return [m for m in self.meters if crashed(m.text())]

    def wait_all_publishing(self, t0, timeout_s, caught=None):
        """Until every meter has published after t0; returns when the last one did (None on
        timeout). With a dict for caught: also until every meter's backlog is replayed, noting
        when (replay is oldest first: once the last reading stored was taken after t0,
        everything older is on the server)."""
        names = set(self.names())
        deadline = time.time() + timeout_s
        while True:
            seen = self.publishing_since(t0)
            if caught is not None:
                for n in names - set(caught):
                    last = self.sim.telemetry(n)[-1:]
                    if last and last[0]["ts"] >= t0 * 1000:
                        caught[n] = time.time()
            if names <= set(seen) and (caught is None or names <= set(caught)):
                return max(seen[n] for n in names)
            if time.time() > deadline:
                return None
            if t0 == self.marks["boot"] and self.crashed():
                return None  # a firmware fault, not slowness: no point waiting
            time.sleep(0.25)

    # --- the outage --------------------------------------------------------------------------
    def outage(self, seconds):
        self.marks["stop"] = time.time()
        self.poll_events()
        self.sim.stop()
        refused = self.refused()
        self.log("fleet: tbsim stopped; port %d %s" % (
            self.port, "refuses connections" if refused else "STILL ACCEPTS connections"))
        time.sleep(max(0.0, self.marks["stop"] + seconds - time.time()))
        if self.restart_mode == "state-file":
            self.sim = self._new_sim(self.port)  # a new server process, as after a crash
            self._since = 0
        self.sim.start()
        self.marks["restart"] = time.time()
        assert self.sim.mqtt_port == self.port
        self.log("fleet: tbsim restarted on port %d after %.1f s (%s)" % (
            self.port, self.marks["restart"] - self.marks["stop"], self.restart_mode))
        return refused

    def settle(self, timeout_s=90):
        """Stop the loads; wait until the server holds every meter's final index."""
        for t in self.trains:
            if t.is_alive():
                t.stop()
        self.marks["loads-off"] = time.time()

        def done():
            for m in self.meters:
                dev = self.sim.device("meter-" + m.uid) or {}
                if dev.get("latestTelemetry", {}).get("pulses") != m.pulses_delivered:
                    return False
            return True
        ok = self.sim.wait_for(done, timeout_s, 0.5)
        self.marks["settled"] = time.time()
        return ok

    def close(self):
        """Every load stopped, every meter powered off, the server stopped: also after an
        interruption half-way through start()."""
        for t in self.trains:
            if t.is_alive():
                t.stop()
        for m in self.meters:
            m.close()
        if self.sim is not None:
            self.poll_events()
            self.sim.stop()

    # --- the figures -------------------------------------------------------------------------
    def report(self, outage_refused):
        events = self.poll_events()
        names = self.names()
        t_stop, t_restart = self.marks["stop"], self.marks["restart"]
        back = self.publishing_since(t_restart)
        back_s = sorted(back[n] - t_restart for n in names if n in back)
        missing = [n for n in names if n not in back]
        t_end = (max(back.values()) if back and not missing
                 else self.marks.get("loads-off", time.time()))
        connects = [e["t"] for e in events if fleetstats.is_connect(e) and e["t"] >= t_restart]
        bins = fleetstats.per_second(connects, t_restart, max(t_end, t_restart) + 1)
        caught = self.caught
        meters = []
        interval_ms = self.interval_s * 1000
        for m in self.meters:
            name = "meter-" + m.uid
            pts = [(p["ts"], p["values"]["pulses"]) for p in self.sim.telemetry(name)
                   if "pulses" in p["values"]]
            s = fleetstats.series_check(pts, interval_ms)
            text = m.text()
            refused_attempts = sum(1 for t, line in m.lines if t_stop <= t < t_restart
                                   and " connect: to " in line)
            s.update(meter=name, pulses_played=m.pulses_delivered,
                     energy_agrees=s["last_index"] == m.pulses_delivered,
                     back_after_s=round(back[name] - t_restart, 3) if name in back else None,
                     attempts_during_outage=refused_attempts, boots=m.boots,
                     crashed=crashed(text))
            meters.append(s)
        model = fleetstats.model(self.n, t_restart - t_stop, self.retry_min_s, self.retry_max_s)
        bound = fleetstats.reconnect_bound_s(t_restart - t_stop, self.retry_min_s, self.retry_max_s)
        caught_s = [caught[n] - t_restart for n in names if caught.get(n)]
        return {
            "meters": self.n, "outage_s": round(t_restart - t_stop, 2),
            "outage_refused": outage_refused, "restart": self.restart_mode,
            "publish_interval_s": self.interval_s,
            "backoff": {"retry_min_s": self.retry_min_s, "retry_max_s": self.retry_max_s,
                        "jitter": "equal: each delay uniform in [d/2, d]"},
            "boot_to_all_publishing_s": round(self.marks["all-publishing"] - self.marks["boot"], 1)
            if "all-publishing" in self.marks else None,
            "reconnect": dict(fleetstats.distribution(bins), per_second=bins, refused_connacks=sum(
                1 for e in events
                if fleetstats.is_connect(e) and e["t"] >= t_restart and e.get("returnCode"))),
            "model": model,
            "all_publishing_after_s": round(back_s[-1], 2) if back_s and not missing else None,
            "publishing_after_s": {"p50": fleetstats.percentile(back_s, 50),
                                   "p90": fleetstats.percentile(back_s, 90)},
            "not_back": missing,
            "bound_s": bound + SLACK_S, "backoff_bound_s": bound,
            "all_caught_up_after_s": round(max(caught_s), 2)
            if caught_s and len(caught_s) == self.n else None,
            "readings": sum(s["readings"] for s in meters),
            "readings_lost": sum(s["lost"] for s in meters),
            "duplicates": sum(s["duplicates"] for s in meters),
            "conflicts": sum(s["conflicts"] for s in meters),
            "backwards": sum(s["backwards"] for s in meters),
            "max_gap_s": max((s["max_gap_ms"] or 0) for s in meters) / 1000.0,
            "energy_agrees": sum(1 for s in meters if s["energy_agrees"]),
            "attempts_during_outage": sum(s["attempts_during_outage"] for s in meters),
            "crashed": [s["meter"] for s in meters if s["crashed"]],
            "per_meter": meters,
        }


def ok(r):
    return (r["outage_refused"] and r["readings_lost"] == 0 and not r["not_back"]
            and r["conflicts"] == 0 and r["backwards"] == 0 and r["energy_agrees"] == r["meters"]
            and r["all_publishing_after_s"] is not None
            and r["all_publishing_after_s"] <= r["bound_s"]
            and not r["crashed"])


def summary(r):
    c, mdl = r["reconnect"], r["model"]

    def some(names, n=5):
        return ", ".join(names[:n]) + (" and %d more" % (len(names) - n) if len(names) > n else "")

    def secs(v):
        return "%.1f s" % v if v is not None else "NOT ALL"
    pub = r["publishing_after_s"]
    lines = [
        "fleet: %d meters, outage %.1f s (connections refused: %s, restart: %s), readings every "
        "%d s, backoff %d..%d s with equal jitter" % (
            r["meters"], r["outage_s"], "yes" if r["outage_refused"] else "NO", r["restart"],
            r["publish_interval_s"], r["backoff"]["retry_min_s"], r["backoff"]["retry_max_s"]),
        "  boot: every meter publishing %s after the first power-on" % secs(
            r["boot_to_all_publishing_s"]),
        "  reconnect peak: %d CONNECT/s (fleet size %d); p50 %s/s, p90 %s/s, mean %.1f/s over "
        "%d s; %d CONNECTs, %d refused" % (c["peak"], r["meters"], c["p50"], c["p90"], c["mean"],
                                           c["seconds"], c["total"], c["refused_connacks"]),
        "  backoff model, same settings: peak p50 %s/s, p99 %s/s; last meter back after "
        "%.1f s (median of %d trials), never later than %.0f s" % (
            mdl["peak_p50"], mdl["peak_p99"], mdl["last_p50_s"], mdl["trials"],
            r["backoff_bound_s"]),
        "  per second after the restart: " + " ".join(str(n) for n in c["per_second"]),
        "  every meter publishing again: %s after the restart (p50 %.1f s, p90 %.1f s; "
        "bound %.0f s)%s" % (secs(r["all_publishing_after_s"]), pub["p50"] or 0, pub["p90"] or 0,
                             r["bound_s"], "; NOT BACK: %d meters: %s" % (
                                 len(r["not_back"]), some(r["not_back"])) if r["not_back"] else ""),
        "  every backlog replayed: %s after the restart" % secs(r["all_caught_up_after_s"]),
        "  readings: %d on the server, %d LOST, %d duplicates (at-least-once), %d conflicting, "
        "%d backwards, largest gap %.1f s; final index = pulses played on %d/%d meters" % (
            r["readings"], r["readings_lost"], r["duplicates"], r["conflicts"], r["backwards"],
            r["max_gap_s"], r["energy_agrees"], r["meters"]),
        "  meters' refused attempts during the outage: %d (%.1f per meter)" % (
            r["attempts_during_outage"], r["attempts_during_outage"] / float(r["meters"])),
        "  crashed meters: %s" % ("%d: %s" % (len(r["crashed"]), some(r["crashed"]))
                                  if r["crashed"] else "none"),
    ]
    return "\n".join(lines)


def run(meters=200, outage_s=60.0, interval_s=5, retry_min_s=2, retry_max_s=300, boot_rate=5.0,
        warmup_s=None, seed=1, restart="same", workdir=None, device_dir=None, log=print):
    """The whole scenario; returns the report (a dict). Every meter is closed at the end."""
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="meter-fleet-")
    fleet = Fleet(meters, workdir, interval_s, retry_min_s, retry_max_s, boot_rate, seed,
                  restart, device_dir, log=log)
    try:
        fleet.start()
        last = fleet.wait_all_publishing(fleet.marks["boot"], 120 + meters / boot_rate)
        if last is None:
            dead = fleet.crashed()
            if dead:
                raise RuntimeError("%d meter(s) crashed while booting; %s's console:\n%s" % (
                    len(dead), dead[0].name, dead[0].text()[-1500:]))
            raise RuntimeError("not every meter published after booting: %s" % sorted(
                set(fleet.names()) - set(fleet.publishing_since(fleet.marks["boot"]))))
        fleet.marks["all-publishing"] = last
        log("fleet: all %d meters publishing %.1f s after the first power-on" % (
            meters, last - fleet.marks["boot"]))
        time.sleep(warmup_s if warmup_s is not None else 2 * interval_s)
        refused = fleet.outage(outage_s)
        bound = fleetstats.reconnect_bound_s(outage_s, retry_min_s, retry_max_s) + SLACK_S
        fleet.wait_all_publishing(fleet.marks["restart"], bound + 60, fleet.caught)
        time.sleep(3 * interval_s)  # backlogs replay; a few live readings after them
        if not fleet.settle():
            log("fleet: not every final index reached the server")
        return fleet.report(refused)
    finally:
        fleet.close()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    ap.add_argument("--meters", type=int, default=int(env("METERS") or 200))
    ap.add_argument("--outage", type=float, default=float(env("OUTAGE") or 60),
                    help="seconds the server is away (60)")
    ap.add_argument("--interval", type=int, default=5, help="publish_interval_s of every meter (5)")
    ap.add_argument("--retry-min", type=int, default=2, help="retry_min_s (firmware default 2)")
    ap.add_argument("--retry-max", type=int, default=300, help="retry_max_s (firmware default 300)")
    ap.add_argument("--boot-rate", type=float, default=5.0, help="meters powered on per second (5)")
    ap.add_argument("--restart", choices=("same", "state-file"), default="same",
                    help="same: TBSim.stop()/start(); state-file: a new TBSim from the saved state")
    ap.add_argument("--device-dir", help="a device tree built by tools/build_device.py without "
                                          "--march (default: build/device, rebuilt from firmware/)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", default=env("REPORT") or None,
                    help="also write the figures as JSON")
    ap.add_argument("--chart", default=env("CHART") or None,
                    help="where to draw the reconnect histogram and the time until each meter is "
                         "back (default: beside --report as .png, else run/fleet/fleet.png)")
    a = ap.parse_args(argv)
    try:
        r = run(a.meters, a.outage, a.interval, a.retry_min, a.retry_max, a.boot_rate, seed=a.seed,
                restart=a.restart, device_dir=a.device_dir, log=lambda s: print(s, flush=True))
    except (RuntimeError, ValueError) as e:
        print("fleet: %s" % e, file=sys.stderr)
        return 2
    print(summary(r), flush=True)
    if a.report:
        os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
        with open(a.report, "w") as f:
            json.dump(r, f, indent=1)
        print("fleet: report written to %s" % a.report)
    chart = a.chart or chart_path(a.report)
    from lab.charts import fleet_chart
    fleet_chart(chart, r)
    print("fleet: chart (reconnects per second, meters back) written to %s" % chart)
    return 0 if ok(r) else 1


def chart_path(report=None):
    """Beside the report (fleet.json: fleet.png), else run/fleet/fleet.png (git-ignored)."""
    if report:
        return (report[:-5] if report.endswith(".json") else report) + ".png"
    return os.path.join(ROOT, "run", "fleet", "fleet.png")


if __name__ == "__main__":
    sys.exit(main())
