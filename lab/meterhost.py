"""Virtual meters: the real firmware on the MicroPython Unix port, with a power switch.

A VirtualMeter owns what the board would: a flash image (LittleFS2, see firmware/hal/unix.py),
the pulse input (a FIFO; every 4-byte record is one edge and the instant it happens on the host's
monotonic clock, which the firmware's pulse thread replays: real pulses at the moment they are
written, their contact bounce and spikes after them, see Bounce and firmware/hal/unix.py), the
Wi-Fi (a file holding up/down/nodns, and the site's networks with their passwords:
set_wifi()), the BOOT button (a file: press_button()), a control FIFO that tells the firmware
when one of those two files changed (it reads them only then), the access point of setup mode (its page on a loopback port of its own:
access_point()), the unique id, and the power supply: power_on() starts `micropython main.py`
from the device tree
(tools/build_device.py), power_cut() is SIGKILL, and a firmware reset (exit code 3) powers it
straight back on, like the chip's reset line, telling the new boot it was a reset
(METER_RESET=1, as the ESP32's reset reason register would). Console lines are kept with host
timestamps.

Used by the end-to-end tests, `make sim` and `make bench`.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# MICROPYTHON=<binary> (make bench, make sim, make fleet, the end-to-end tests) runs every
# virtual meter on another build of the Unix port: a 32-bit one, a newer release. Resolved
# here, since each meter runs in a directory of its own.
MICROPYTHON = os.path.abspath(os.environ.get("MICROPYTHON") or os.path.join(VENV_BIN, "micropython"))
DEVICE_DIR = os.path.join(ROOT, "build", "device")
RESET_EXIT_CODE = 3  # firmware/hal/unix.py


def ensure_device_tree(out_dir=DEVICE_DIR):
    from tools.build_device import build
    build(out_dir)
    return out_dir


def _flashimg(image, *args, data=None):
    """Run lab/flashimg.py on the Unix port (the meter's own LittleFS code)."""
    env = dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    return subprocess.run([MICROPYTHON, os.path.join(ROOT, "lab", "flashimg.py"), image] +
                          list(args), env=env, capture_output=True, timeout=60)


# Pulse FIFO records (firmware/hal/unix.py): the edge's time, host monotonic µs, low 30 bits,
# little-endian; bit 31 set for noise (bounce, spikes), so what a power cut left unread can be
# told apart. Written at most _PIPE_ATOMIC bytes at a time: the kernel then writes all or
# nothing, and a record is never split.
_EDGE_MASK = 0x3FFFFFFF
_NOISE = 0x80000000
_PIPE_ATOMIC = 4096  # PIPE_BUF on Linux, a multiple of the record's 4 bytes


_EARLY = re.compile(r"hal: (\d+) pulses and (\d+) noise edges came before the pulse input")


def _record(t_s, noise=False):
    us = int(t_s * 1e6) & _EDGE_MASK
    return (us | (_NOISE if noise else 0)).to_bytes(4, "little")


class Bounce:
    """What a bad contact or a long unshielded wire adds to each real edge, for VirtualMeter.pulse.

    edges: extra edges after every real one, each 0.5-5 ms (min_ms..max_ms) after it, as a
    mechanical contact bounces (the edge filter must reject them all: keep max_ms below
    pulse_min_interval_ms). spike_p: the chance that a real edge also brings an isolated
    spike, one more edge spike_ms after it (alone, well after the bounce, still inside the
    debounce window: EMI that the interrupt handler rejects and the hardware counter counts;
    the default 6-9 ms keeps to 2/3 of the default 15 ms window, as firmware/pulses.py needs).
    Seeded: the same train every run. after() gives the offsets in ms of one edge's extras."""

    def __init__(self, edges=2, min_ms=0.5, max_ms=5.0, spike_p=0.0, spike_ms=(6.0, 9.0), seed=1):
        import random
        assert 0 < min_ms <= max_ms and spike_ms[0] <= spike_ms[1] < 100
        self.edges, self.min_ms, self.max_ms = edges, min_ms, max_ms
        self.spike_p, self.spike_ms = spike_p, spike_ms
        self._rand = random.Random(seed)
        self.extra = 0  # extra edges played so far

    def after(self):
        r = self._rand
        offsets = sorted(r.uniform(self.min_ms, self.max_ms) for _ in range(self.edges))
        if self.spike_p and r.random() < self.spike_p:
            offsets.append(r.uniform(*self.spike_ms))
        self.extra += len(offsets)
        return offsets


def edge_records(n, bounce=None, at=None):
    """FIFO records for n real edges at host monotonic time `at` (default: now), each followed
    by its bounce (firmware/hal/unix.py)."""
    t = time.monotonic() if at is None else at
    out = bytearray()
    for _ in range(n):
        out += _record(t)
        if bounce is not None:
            for off in bounce.after():
                out += _record(t + off / 1000, noise=True)
    return bytes(out)


def _count_records(data):
    """(real pulses, noise edges) among whole FIFO records."""
    noise = sum(1 for i in range(3, len(data), 4) if data[i] & 0x80)
    return len(data) // 4 - noise, noise


def decode_record(raw):
    """A firmware/store.py record: JSON, newline, crc32 hex. None when unreadable."""
    import binascii
    if not raw or not raw.endswith(b"\n"):
        return None
    body, _, crc = raw[:-1].rpartition(b"\n")
    try:
        if int(crc, 16) != binascii.crc32(body) & 0xFFFFFFFF:
            return None
        return json.loads(body)
    except ValueError:
        return None


def _free_port(kind):
    # A loopback port nobody uses now, for the meter's access point (its page and its DNS).
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class VirtualMeter:
    def __init__(self, workdir, config, device_dir=DEVICE_DIR, uid="a1b2c3d4e5f6", heap="116K",
                 files=None, env=None, echo=None, name=None, hw_counter=True):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.name = name or uid
        self.device_dir = device_dir
        self.heap = heap
        self.uid = uid
        self.flash = os.path.join(workdir, "flash.img")
        self.fifo = os.path.join(workdir, "pulses")
        self.netfile = os.path.join(workdir, "net")
        self.buttonfile = os.path.join(workdir, "button")
        self.controlfile = os.path.join(workdir, "control")  # METER_CONTROL (firmware/hal/unix.py)
        self.apfile = os.path.join(workdir, "ap.json")
        self.ap_port, self.dns_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
        self.console_path = os.path.join(workdir, "console.log")
        self.extra_env = env or {}
        self.faults_injected = False  # set by tests that inject one (METER_FAULT_MS)
        self.echo = echo  # callable(meter, line) for live views
        self.lines = []  # (host time, text)
        self.boots = 0
        self.exits = []  # (host time, return code)
        self.reset_cause = 0  # of the running boot: 0 power-up, 1 reset (firmware/hal/unix.py)
        self.proc = None
        self._reader = None  # the thread reading the running boot's console
        self.powered = False
        self.auto_restart = True
        self.pulses_delivered = 0  # real pulses the running firmware could see
        self.pulses_lost_off = 0  # real pulses written but never read: the meter had no power
        self.pulses_before_input = 0  # of those, written while a boot had no pulse input yet
        self.noise_edges = 0  # bounce and spike edges written while powered (not pulses)
        self._closed = False
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        if not os.path.exists(self.fifo):
            os.mkfifo(self.fifo)
        # O_RDWR: a FIFO opened this way never blocks and never gets EPIPE; the firmware's
        # feeder thread is the other reader.
        self._fifo_fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        if not os.path.exists(self.controlfile):
            os.mkfifo(self.controlfile)
        self._control_fd = os.open(self.controlfile, os.O_RDWR | os.O_NONBLOCK)
        self.set_net("up")
        self.put_config(config)
        for fname, data in (files or {}).items():
            self.put_file(fname, data)

    # --- flash ---------------------------------------------------------------------------------
    def put_file(self, name, data):
        assert not self.powered, "write the flash with the power off"
        with tempfile.NamedTemporaryFile(dir=self.dir, delete=False) as f:
            f.write(data)
        try:
            r = _flashimg(self.flash, "put", f.name, name)
            if r.returncode:
                raise RuntimeError("flashimg put %s: %s" % (name, r.stderr.decode()))
        finally:
            os.unlink(f.name)

    def put_config(self, config):
        self.config = dict(config)
        self.put_file("config.json", json.dumps(config).encode())

    def read_file(self, name):
        """A file from flash (a snapshot of the image if the meter is running)."""
        snap = self.flash + ".snap"
        shutil.copyfile(self.flash, snap)
        try:
            r = _flashimg(snap, "get", name)
        finally:
            os.unlink(snap)
        return r.stdout if r.returncode == 0 else None

    def record(self, name):
        """A state record (state/<name>.json) decoded, or None."""
        return decode_record(self.read_file("state/%s.json" % name) or b"")

    # --- the outside world ---------------------------------------------------------------------
    def set_net(self, state, networks=()):
        """state: up, down or nodns. networks: the site's (ssid, rssi dBm, password); with any,
        the meter joins only one of them, with its password (firmware/hal/unix.py)."""
        lines = [state] + ["net\t%d\t%s\t%s" % (rssi, ssid, pw) for ssid, rssi, pw in networks]
        with open(self.netfile + ".tmp", "w") as f:
            f.write("\n".join(lines))
        os.replace(self.netfile + ".tmp", self.netfile)
        self._changed()

    def set_wifi(self, *networks, state="up"):
        self.set_net(state, networks)

    def access_point(self):
        """What a phone sees of the meter's setup access point: {"ssid", "security",
        "password", "http", "dns"}, or None while none is open."""
        try:
            with open(self.apfile) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def ap_url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.ap_port, path)

    def press_button(self, held=True):
        if held:
            open(self.buttonfile, "w").close()
        elif os.path.exists(self.buttonfile):
            os.unlink(self.buttonfile)
        self._changed()

    def _changed(self):
        # The firmware looks at the network and button files when a byte arrives on the control
        # FIFO, within one main-loop step; written after the file, so the look sees the change.
        # Full (the meter is off, or not reading): it has bytes to read already.
        try:
            os.write(self._control_fd, b".")
        except OSError:
            pass

    def pulse(self, n=1, bounce=None, at=None):
        """n real pulses on the pulse input, now (or at host time.monotonic() `at`, at most
        100 ms ahead), each with its contact bounce (a Bounce) if given. Edges while the power
        is off reach nobody."""
        data = edge_records(n, bounce, at)
        if not self._write(data):
            return
        with self._lock:
            if self.powered:
                self.pulses_delivered += n
                self.noise_edges += len(data) // 4 - n
            else:
                self.pulses_lost_off += n
                self._drain()

    def spike(self, at=None):
        """One noise edge now (or at time.monotonic() `at`): not a pulse. Alone, this far from
        any real edge, any edge filter counts it (firmware/pulses.py); `at` right after a
        pulse makes it that pulse's bounce, however late it is written."""
        if not self._write(_record(time.monotonic() if at is None else at, noise=True)):
            return
        with self._lock:
            if self.powered:
                self.noise_edges += 1
            else:
                self._drain()

    def _write(self, data):
        while data:
            if self._closed:
                return False
            try:
                k = os.write(self._fifo_fd, data[:_PIPE_ATOMIC])
            except BlockingIOError:
                time.sleep(0.001)  # pipe full: the meter is busy; the pulse hardware waits
                continue
            data = data[k:]
        return True

    def _drain(self):
        # Records still in the pipe when the power went: nobody counted them.
        pulses = noise = 0
        while True:
            try:
                chunk = os.read(self._fifo_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            p, n = _count_records(chunk)
            pulses += p
            noise += n
        return pulses, noise

    # --- power -----------------------------------------------------------------------------------
    def env(self):
        e = dict(os.environ)
        e.update(MICROPYPATH=os.path.join(self.device_dir, "lib") + ":.frozen",
                 METER_FLASH=self.flash, METER_PULSES=self.fifo, METER_NET=self.netfile,
                 METER_CONTROL=self.controlfile,
                 METER_UID=self.uid, METER_BUTTON=self.buttonfile, METER_AP=self.apfile,
                 METER_AP_PORT=str(self.ap_port), METER_DNS_PORT=str(self.dns_port))
        e.update(self.extra_env)
        if self.reset_cause:
            e["METER_RESET"] = str(self.reset_cause)
        return e

    def power_on(self, reset_cause=0):
        with self._lock:
            assert not self.powered
            self.reset_cause = reset_cause
            try:  # changes made while off: the boot looks at the files anyway
                while os.read(self._control_fd, 4096):
                    pass
            except BlockingIOError:
                pass
            self.proc = subprocess.Popen(
                [MICROPYTHON, "-X", "heapsize=" + self.heap, os.path.join(self.device_dir, "main.py")],
                cwd=self.dir, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)
            self.powered = True
            self.boots += 1
            self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
            self._reader.start()

    def _read(self, proc):
        with open(self.console_path, "ab") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(raw)
                log.flush()
                early = _EARLY.match(line)
                with self._cond:
                    if early:
                        # Written while the process started, before the pulse input existed:
                        # a board would not have counted them either (firmware/hal/unix.py).
                        p, n = int(early.group(1)), int(early.group(2))
                        self.pulses_delivered -= p
                        self.pulses_lost_off += p
                        self.pulses_before_input += p
                        self.noise_edges -= n
                    self.lines.append((time.time(), line))
                    self._cond.notify_all()
                if self.echo:
                    self.echo(self, line)
        rc = proc.wait()
        with self._cond:
            if self.proc is not proc:
                return
            self._radio_off()
            self.exits.append((time.time(), rc))
            self.powered = False
            lost, noise = self._drain()
            self.pulses_delivered -= lost
            self.pulses_lost_off += lost
            self.noise_edges -= noise
            self._cond.notify_all()
            restart = self.auto_restart and rc == RESET_EXIT_CODE
        if restart:
            self.power_on(reset_cause=1)

    def power_cut(self):
        """SIGKILL: the power fails. Returns once the process is gone and its console is read
        to the end."""
        with self._lock:
            proc, reader = self.proc, self._reader
            if proc is None or proc.poll() is not None:
                self.powered = False
                return
            self.proc = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended by itself between poll() and the kill (a reset, a crash)
        proc.wait()
        if reader is not threading.current_thread():
            # The lines the boot wrote before the cut may still be in the pipe: read by the
            # reader thread, they would be missing from text() right after the cut, and stamped
            # with a host time after the next power_on() (seen as the next boot's). The pipe's
            # end is the process's: EOF follows the kill at once; the timeout is a safety net.
            reader.join(10)
        with self._cond:
            self._radio_off()
            self.exits.append((time.time(), proc.returncode))
            self.powered = False
            lost, noise = self._drain()
            self.pulses_delivered -= lost
            self.pulses_lost_off += lost
            self.noise_edges -= noise
            self._cond.notify_all()

    def _radio_off(self):
        # Without power there is no access point.
        try:
            os.unlink(self.apfile)
        except OSError:
            pass

    def close(self):
        self.auto_restart = False
        self._closed = True
        self.power_cut()
        for fd in (self._fifo_fd, self._control_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- console -----------------------------------------------------------------------------------
    def text(self, since=0):
        with self._lock:
            return "\n".join(l for t, l in self.lines if t >= since)

    def count(self, pattern, since=0):
        rx = re.compile(pattern)
        with self._lock:
            return sum(1 for t, l in self.lines if t >= since and rx.search(l))

    def wait_for(self, pattern, timeout=30, since=0):
        """Wait for a console line matching pattern (regex). Returns the line or None."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        with self._cond:
            while True:
                for t, l in self.lines:
                    if t >= since and rx.search(l):
                        return l
                left = deadline - time.time()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    @property
    def state(self):
        """The last boot-state transition seen on the console."""
        with self._lock:
            for _t, l in reversed(self.lines):
                m = re.search(r" state: \S+ -> (\S+)", l)
                if m:
                    return m.group(1)
        return None


_LATE_S = 0.001  # a pulse played later than this after its time moves the schedule


class PulseTrain(threading.Thread):
    """Plays edges on a meter's pulse input at a power given by load_w(t) (t in seconds).

    Each edge is scheduled from the previous one: the gap is one pulse's energy divided by the
    power at that instant, 3.6e6 / (C * P) seconds. bounce: a Bounce, played after every real
    edge. Counts the real pulses it played.

    A pulse played late (this thread woke late, or waited for the GIL, on a loaded host) moves
    the schedule: the next one comes a full gap after it. Catching up instead would play two
    pulses closer together than the load makes them, closer than the debounce if late enough
    (measured: 11.7 ms apart for 20 ms at 50 pulses/s, beside the test server's TLS work): a
    wire no meter gives, which the firmware rightly counts as one pulse and a bounce
    (firmware/pulses.py)."""

    def __init__(self, meter, per_kwh, load_w, speedup=1.0, max_pulses=None, bounce=None):
        super().__init__(daemon=True)
        self.meter = meter
        self.bounce = bounce
        self.per_kwh = per_kwh
        self.load_w = load_w
        self.speedup = speedup
        self.max_pulses = max_pulses
        self.played = 0
        self._halt = threading.Event()

    def run(self):
        start = time.monotonic()
        due = start
        while not self._halt.is_set():
            t = (due - start) * self.speedup
            p = max(self.load_w(t), 0.0)
            if p <= 0:
                due += 1.0
                self._halt.wait(max(0.0, due - time.monotonic()))
                continue
            due += 3.6e6 / (self.per_kwh * p) / self.speedup
            delay = due - time.monotonic()
            if delay > 0 and self._halt.wait(delay):
                break
            if self.meter._closed:
                break
            self.meter.pulse(1, self.bounce)
            self.played += 1
            done = time.monotonic()
            if done - due > _LATE_S:
                due = done
            if self.max_pulses is not None and self.played >= self.max_pulses:
                break

    def stop(self):
        self._halt.set()
        self.join(5)
