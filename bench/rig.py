"""The bench rig: one tbsim (plain and TLS), virtual meters of either kind, pulse players.

A meter is the firmware (build/bench/device) or the baseline (build/bench/baseline), optionally
under the probe (bench/probe). Both read the same config.json; a meter in service is simulated
by a pulse index already on flash (INDEX0), so payloads carry realistic numbers of digits.
"""

import binascii
import json
import os
import re
import shutil
import tempfile
import threading
import time

from firmware.cups import check_letters
from lab.certs import make_test_pki
from lab.meterhost import VirtualMeter
from tbsim import Profile, TBSim

KEY, SECRET = "bench-profile-key", "bench-profile-secret"
SUPPLIER = "bench-supplier-secret-key"
INDEX0 = 12345678  # a meter some years in service: 12345.678 kWh at 1000 imp/kWh
KINDS = ("firmware", "baseline")
# Every run but the min_heapsize search gets a heap no kind runs short of, so that its figures
# describe behaviour and not memory pressure (min_heapsize is the memory figure); the probe
# also needs ~8 KB of its own.
HEAP = "256K"


def cups(n):
    digits = "0031%012d" % n
    return "ES" + digits + check_letters(digits) + "0F"


def store_record(obj):
    """A firmware/store.py record: JSON, newline, crc32 hex, newline."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return body + b"\n%08x\n" % (binascii.crc32(body) & 0xFFFFFFFF)


class Rig:
    def __init__(self, trees, workdir=None, keep=False):
        self.trees = trees
        self.work = workdir or tempfile.mkdtemp(prefix="meter-bench-")
        self.keep = keep
        self.pki = make_test_pki(os.path.join(self.work, "pki"), hostnames=("localhost",))
        with open(self.pki["ca_der"], "rb") as f:
            self.ca = f.read()
        self.sim = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=0, certfile=self.pki["cert"],
                         keyfile=self.pki["key"], provision_close_s=5.0)
        self.sim.start()
        self.meters = []
        self._n = 0
        self._lock = threading.Lock()

    def close(self):
        for m in self.meters:
            m.close()
        self.sim.stop()
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def config(self, port=None, tls=False, **over):
        with self._lock:
            self._n += 1
            n = self._n
        cfg = {"wifi_ssid": "bench-net", "wifi_password": "bench-wifi-password",
               "tb_host": "localhost" if tls else "127.0.0.1",
               "tb_port": port or (self.sim.mqtts_port if tls else self.sim.mqtt_port),
               "tb_tls": tls, "provision_key": KEY, "provision_secret": SECRET,
               "supplier_key": SUPPLIER, "cups": cups(n), "pulse_pin": 4}
        if not tls:
            cfg["tb_plain_ok"] = True
        cfg.update(over)
        return {k: v for k, v in cfg.items() if v is not None}

    def meter(self, kind, cfg, probe=False, heap=HEAP, index=INDEX0, env=None, tag=""):
        """A powered-off meter of kind 'firmware' or 'baseline' with cfg on its flash."""
        with self._lock:
            self._n += 1
            uid = "be%010x" % self._n
        tree = {"firmware": "device", "baseline": "baseline"}[kind] + ("-probe" if probe else "")
        files = {}
        if cfg.get("tb_tls"):
            files["ca.der"] = self.ca
        if index:
            if kind == "firmware":
                files["state/pulses.json"] = store_record({"index": index})
            else:
                files["total.json"] = json.dumps(index).encode()
        e = {"BENCH_TARGET": kind, "BENCH_PROBE": "probe"}  # bench/probe/main.py
        e.update(env or {})
        m = VirtualMeter(os.path.join(self.work, "%s-%s%s" % (uid, kind, tag)), cfg,
                         self.trees[tree], uid=uid, heap=heap, files=files, env=e)
        m.kind = kind
        m.device = "meter-" + uid
        self.meters.append(m)
        return m

    # --- what the server holds ------------------------------------------------------------------
    def readings(self, m):
        """Telemetry entries holding a pulse index (health values excluded), oldest first."""
        return [e for e in self.sim.telemetry(m.device) if "pulses" in e["values"]]

    def publish_times(self, m, qos=None):
        """Host times at which tbsim accepted a telemetry message holding readings (at QoS 1: and
        PUBACKed it). The firmware's one-shot report of its version (current_fw_*) and the health
        values are telemetry too, but not readings."""
        return [e["t"] for e in self.sim.events("publish")
                if e.get("device") == m.device and e.get("accepted") and
                e.get("topic") == "v1/devices/me/telemetry" and qos in (None, e.get("qos"))
                and "pulses" in e.get("keys", ())]

    def wait_readings(self, m, n, timeout):
        return self.sim.wait_for(lambda: len(self.readings(m)) >= n, timeout, 0.02)

    def need_readings(self, m, n, timeout, what):
        """wait_readings, or an error that shows the meter's console."""
        if not self.wait_readings(m, n, timeout):
            fail(m, "%s: %d readings expected within %d s" % (what, n, timeout))


def together(*calls):
    """Run the calls side by side; raise the first error any of them raised."""
    errors = []

    def run(call):
        try:
            call()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def fail(m, what):
    raise RuntimeError("%s %s: %s, console: ...%s" % (m.kind, m.device, what,
                                                     m.text()[-1500:].replace("\n", " | ")))


def bench_value(m, key, timeout=0):
    """The value of a 'BENCH <key> <n>' console line from the probe, or None."""
    line = m.wait_for(r"^BENCH %s -?\d+$" % re.escape(key), timeout) if timeout else None
    if line is None:
        for _t, l in reversed(m.lines):
            if l.startswith("BENCH %s " % key):
                line = l
                break
    return int(line.split()[2]) if line else None


def bench_times(m, key):
    """Host times of every 'BENCH <key> ...' line."""
    return [t for t, l in list(m.lines) if l.startswith("BENCH %s " % key)]


class Player(threading.Thread):
    """Plays edges at a load given by load_w(t) (t: seconds since start) and keeps their host
    times. An edge leaves one pulse's energy after the previous one: 3.6e6 / (C * P) s."""

    def __init__(self, meter, per_kwh, load_w, duration_s=None, bounce=None):
        super().__init__(daemon=True)
        self.meter, self.per_kwh, self.load_w, self.duration_s = meter, per_kwh, load_w, duration_s
        self.bounce = bounce  # a lab.meterhost.Bounce: contact bounce after every edge
        self.times = []
        self.start_time = None
        self._halt = threading.Event()

    def run(self):
        self.start_time = t0 = time.time()
        due = t0
        while not self._halt.is_set():
            t = due - t0
            if self.duration_s is not None and t >= self.duration_s:
                break
            p = self.load_w(t)
            if p <= 0:
                due += 0.01
                self._halt.wait(max(0.0, due - time.time()))
                continue
            due += 3.6e6 / (self.per_kwh * p)
            delay = due - time.time()
            if delay > 0 and self._halt.wait(delay):
                break
            if self.duration_s is not None and due - t0 > self.duration_s:
                break
            self.meter.pulse(1, self.bounce)
            self.times.append(time.time())

    def stop(self):
        self._halt.set()
        self.join(10)


class Steady(Player):
    """Edges at a constant rate (pulses/s) for duration_s."""

    def __init__(self, meter, rate, duration_s=None, bounce=None):
        super().__init__(meter, 3600.0, lambda t: rate * 1000.0, duration_s, bounce)
