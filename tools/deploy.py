"""Put the meter firmware and one meter's config on a board with mpremote; read its status.

    python tools/deploy.py deploy --port PORT --config devices/meter-0001.json [--ca ca.der]
                                  [--march xtensawin] [--frozen] [--no-reset]
                                  [--index PULSES | --kwh KWH] [--force]
    python tools/deploy.py status --port PORT [--json]
    python tools/deploy.py selftest --port PORT [--pin GPIO]

deploy, in this order, and nothing on the board is changed until every check passed:
1. the config is validated by firmware/config.py (the meter's own rules) and, with TLS, the CA
   file is checked to be DER (the board's mbedTLS rejects PEM). Without --ca, a meter that
   talks TLS to ThingsBoard Cloud (tb_host mqtt.thingsboard.cloud, tb_ca ca.der) gets the CA
   bundle that ships with the firmware, build/ca/thingsboard-cloud.der (tools/cloud_ca.py);
2. firmware/, lib/umqtt and lib/microdot are compiled with mpy-cross (tools/build_device.py);
3. the board is asked (read-only) for its .mpy version and architecture, whether its firmware
   already has umqtt.simple, whether the CA file is on it, and for its pulse index record; an
   incompatible board stops here, and so does --index/--kwh below what the board already
   counts (unless --force);
4. one mpremote session creates the folders, removes firmware/*.py sources that would shadow
   the new .mpy files, copies the boot loader (main.py, boot.py, bootslot.mpy: never frozen),
   firmware/**/*.mpy (firmware/entry.py and all it runs; with --frozen they are in the image),
   lib/umqtt (only when the firmware lacks it), lib/microdot (the setup page's server; with
   --frozen it is in the image), the config as config.json and the CA, writes the starting
   pulse index (--index/--kwh), then resets the board. mpremote's cp compares sha256 on the
   board and skips unchanged files, so running deploy again copies only what changed.

The starting index is for a board swap or after `make flash` (which erases the flash): the new
board would start at 0 and the server would see the register go backwards. It is written as the
meter writes it (firmware/store.py: JSON and CRC, a temporary file renamed over the record), and
only if the record on the board is still the one read in step 3. Only this tool, on the USB
cable, can set it: no RPC and no attribute can (firmware/remote.py).

status runs firmware/report.py on the board (mpremote interrupts main.py with Ctrl-C; main.py
lets KeyboardInterrupt through, so the board lands in the REPL), prints its JSON summary for a
technician, and resets the board so the meter runs again (--no-reset leaves it at the REPL).
Secrets arrive masked by the board; nothing is written there.

selftest runs firmware/selftest.py on the board the same way (the meter is stopped, the module is
loaded only for this) and prints its report as it comes, one PASS/FAIL/SKIP line per check; the
board is reset afterwards, which also stops the watchdog the test armed. Exit status 1 when a
check failed.
"""

import argparse
import binascii
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware.config import DEFAULT_HOST, FIELDS  # noqa: E402
from firmware.store import Store  # noqa: E402
from tools import build_device, cloud_ca  # noqa: E402
from tools.meterconfig import check_file  # noqa: E402

MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")
MPY_VERSION = 6  # what mpy-cross 1.29 emits (v6.3); MicroPython >= 1.23 loads it
_ARCHES = {0: "none (bytecode)", 1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m",
           6: "armv7em", 7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin",
           11: "rv32imc", 12: "rv64imc"}


class DeployError(Exception):
    pass


# --- local checks ----------------------------------------------------------------------------

def mpy_header(path):
    """(version, sub-version, arch) from a .mpy file's header (py/persistentcode.h)."""
    with open(path, "rb") as f:
        h = f.read(4)
    if len(h) < 4 or h[0:1] != b"M":
        raise DeployError("%s is not a .mpy file" % path)
    return h[1], h[2] & 3, h[2] >> 2


def check_ca(path):
    with open(path, "rb") as f:
        head = f.read(64)
    if head.lstrip().startswith(b"-----BEGIN"):
        raise DeployError("%s is PEM; the board needs DER: "
                          "openssl x509 -in %s -outform DER -out ca.der" % (path, path))
    if head[:1] != b"\x30":
        raise DeployError("%s is not a DER certificate" % path)


def device_files(tree, skip_firmware=False):
    """(local path, path on the board) for the code in a built device tree."""
    out = []
    # The boot loader, never frozen (bootslot.py says why); firmware/entry.py, which main.py runs,
    # is part of the firmware package: frozen in an image, replaced by an OTA update.
    for name in ("boot.py", "main.py", "bootslot.mpy"):
        out.append((os.path.join(tree, name), name))
    if not skip_firmware:
        for dirpath, _dirs, files in sorted(os.walk(os.path.join(tree, "firmware"))):
            for f in sorted(files):
                if f.endswith(".mpy"):
                    p = os.path.join(dirpath, f)
                    out.append((p, os.path.relpath(p, tree).replace(os.sep, "/")))
    return out


def for_platform(files, platform):
    """The files a board of this platform runs: the Unix port's HAL (a board simulator) is for
    Unix-port boards only, such as the tests' fake board; never copied to an ESP32
    (tools/build_device.py UNIX_ONLY)."""
    if platform == "esp32":
        return [(l, r) for l, r in files if r[:-4] not in build_device.UNIX_ONLY]
    return list(files)


def lib_files(tree, package):
    d = os.path.join(tree, "lib", package)
    return [(os.path.join(d, f), "lib/%s/%s" % (package, f)) for f in sorted(os.listdir(d))
            if f.endswith(".mpy")]


def umqtt_files(tree):
    return lib_files(tree, "umqtt")


def shipped_ca_applies(cfg):
    """The CA bundle that ships with the firmware (tools/cloud_ca.py) goes onto the board when
    the meter talks TLS to ThingsBoard Cloud under the default CA file name. Another host has
    its own CA (CA=); another tb_ca name is the technician's own CA, which deploy leaves alone
    once it is on the board (docs/deploy.md: "Giving meters another CA")."""
    return (cfg["tb_tls"] and cfg["tb_host"] == DEFAULT_HOST
            and cfg["tb_ca"] == FIELDS["tb_ca"][1])


def shipped_ca(log=print):
    """The bundle's path, built now when make has not built it (tools/deploy.py run alone)."""
    if not os.path.exists(cloud_ca.OUT):
        try:
            cloud_ca.build(log=log)
        except cloud_ca.CAError as e:
            raise DeployError("the ThingsBoard Cloud CA bundle could not be built: %s" % e)
    check_ca(cloud_ca.OUT)
    log("deploy: CA for %s: %s (tools/cloud_ca.py; CA= overrides)" % (
        DEFAULT_HOST, os.path.relpath(cloud_ca.OUT, ROOT)))
    return cloud_ca.OUT


# The pulse index record, as firmware/pipeline.py keeps it through firmware/store.py.
INDEX_RECORD = "pulses"
INDEX_PATH = "state/pulses.json"
INDEX_MAX = 10 ** 12  # pulses: far beyond any meter's register, at any pulses_per_kwh
_RECORD_MAX = 4096  # bytes read from the board's record (one is about 30)


def kwh_text(index, per_kwh):
    """kWh for a pulse index as exact decimal text when it has one (as the meter shows it,
    firmware/pulses.py energy_text), else to 9 places."""
    q = Fraction(index, per_kwh)
    whole, rest = divmod(q.numerator, q.denominator)
    for places in range(0, 10):
        scaled = rest * 10 ** places
        if scaled % q.denominator == 0:
            return "%d.%0*d" % (whole, places, scaled // q.denominator) if places else "%d" % whole
    return "%d.%09d" % (whole, (rest * 10 ** 9 * 2 + q.denominator) // (2 * q.denominator))


def starting_index(cfg, index=None, kwh=None):
    """The pulse index asked for with --index or --kwh (None when neither), checked."""
    if index is not None and kwh is not None:
        raise DeployError("give INDEX= or KWH=, not both")
    if index is not None:
        if not re.fullmatch(r"[0-9]+", str(index)):
            raise DeployError("INDEX=%s: must be a whole number of pulses (digits only)" % index)
        n = int(index)
    elif kwh is not None:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", str(kwh)):
            raise DeployError("KWH=%s: must be a decimal number of kWh, e.g. 12345.678" % kwh)
        per = cfg["pulses_per_kwh"]
        exact = Fraction(str(kwh)) * per
        if exact.denominator != 1:
            raise DeployError("KWH=%s is not a whole number of pulses at %d pulses per kWh "
                              "(%s pulses): give the register as INDEX=<pulses>, or KWH= with "
                              "fewer decimals" % (kwh, per, float(exact)))
        n = int(exact)
    else:
        return None
    if n > INDEX_MAX:
        raise DeployError("%d pulses is more than any meter counts (%d at most)" % (n, INDEX_MAX))
    return n


class _Quiet:
    # The Store's log: keeps its reason ("truncated", "checksum mismatch", ...).
    def __init__(self):
        self.why = None

    def warn(self, tag, msg, *args):
        self.why = args[-1] if args else msg


def read_index_record(raw):
    """What the meter would start from with this pulses.json on its flash: (index, note). The
    firmware's own reader decides (firmware/store.py, firmware/pipeline.py start())."""
    if raw is None:
        return 0, "no pulse index on the board"
    log = _Quiet()
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "state"))
        with open(os.path.join(d, INDEX_PATH), "wb") as f:
            f.write(raw)
        rec = Store(log, root=d).read(INDEX_RECORD)
    index = rec.get("index") if isinstance(rec, dict) else None
    if isinstance(index, int) and index >= 0:  # the pipeline's own test
        return int(index), None
    return 0, "the pulse index record on the board is unreadable (%s); the meter would start at 0" % (
        log.why or "no index in it")


def index_record(index):
    """The bytes of the record the meter itself would write for this index."""
    with tempfile.TemporaryDirectory() as d:
        Store(_Quiet(), root=d).write(INDEX_RECORD, {"index": index})
        with open(os.path.join(d, INDEX_PATH), "rb") as f:
            return f.read()


# --- the board ---------------------------------------------------------------------------------

# Runs on the board. Read-only. The umqtt test leaves out the filesystem entries of sys.path
# ('' and lib), so it finds only modules built into the firmware ('.frozen' on an ESP32).
_PROBE = """
import sys, os, json
r = {"mpy": getattr(sys.implementation, "_mpy", 0), "platform": sys.platform,
     "version": list(sys.implementation.version[:3])}
_p = list(sys.path)
while sys.path:
    sys.path.pop()
for _x in _p:
    if _x not in ("", ".", "/", "lib", "/lib"):
        sys.path.append(_x)
try:
    import umqtt.simple
    r["umqtt"] = True
except ImportError:
    r["umqtt"] = False
while sys.path:
    sys.path.pop()
for _x in _p:
    sys.path.append(_x)
def _ex(f):
    try:
        os.stat(f)
        return True
    except OSError:
        return False
r["exists"] = [f for f in %s if _ex(f)]
try:
    import binascii
    with open("state/pulses.json", "rb") as _f:
        r["index_raw"] = binascii.hexlify(_f.read(%d)).decode()
except OSError:
    r["index_raw"] = None
print("PROBE:" + json.dumps(r))
"""

# Runs on the board before the copies: folders, then sources that would shadow the .mpy files
# (MicroPython imports x.py before x.mpy from the same folder).
_PREPARE = """
import os
for _d in %s:
    try:
        os.mkdir(_d)
    except OSError:
        pass
for _f in %s:
    try:
        os.remove(_f)
    except OSError:
        pass
"""


def mpremote(port, *args, check=True, timeout=300):
    cmd = [MPREMOTE, "connect", port] + list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployError("mpremote timed out on %s (is the board connected and powered?)" % port)
    if check and p.returncode != 0:
        raise DeployError("mpremote failed on %s:\n%s" % (port, (p.stdout + p.stderr).strip()))
    return p


# Runs on the board after the copies: the starting pulse index, only if the record is still the
# one the probe read (compare and swap: a meter restarted by its watchdog in between may have
# counted on). Temporary file, then rename, as firmware/store.py writes it: a power cut leaves
# the old record or the new one.
_SET_INDEX = """
import os, binascii
_old = %s
try:
    with open("state/pulses.json", "rb") as _f:
        _now = binascii.hexlify(_f.read(%d)).decode()
except OSError:
    _now = None
if _now != _old:
    print("INDEX:CHANGED")
else:
    try:
        os.mkdir("state")
    except OSError:
        pass
    with open("state/pulses.tmp", "wb") as _f:
        _f.write(binascii.unhexlify(%r))
    os.rename("state/pulses.tmp", "state/pulses.json")
    print("INDEX:SET")
"""


def probe(port, paths):
    p = mpremote(port, "exec", _PROBE % (json.dumps(paths), _RECORD_MAX))
    for line in p.stdout.splitlines():
        if line.startswith("PROBE:"):
            return json.loads(line[6:])
    raise DeployError("no answer from the board on %s:\n%s" % (port, p.stdout + p.stderr))


def check_board(info, files):
    """Refuse a board that cannot load these .mpy files."""
    mpy = info.get("mpy") or 0
    version, sub, arch = mpy & 0xFF, (mpy >> 8) & 3, mpy >> 10
    for local, remote in files:
        if not local.endswith(".mpy"):
            continue
        fv, fsub, farch = mpy_header(local)
        if fv != version:
            raise DeployError(
                "the board runs MicroPython %s, which loads .mpy v%d; %s is v%d "
                "(MicroPython 1.23 or later): flash the pinned release first (make flash)"
                % (".".join(map(str, info.get("version", []))), version, remote, fv))
        if farch and (farch != arch or fsub != sub):
            raise DeployError(
                "%s holds native code for %s; the board is %s: build with MARCH=%s "
                "(or MARCH= for bytecode)" % (remote, _ARCHES.get(farch, farch),
                                              _ARCHES.get(arch, arch), _ARCHES.get(arch, "")))


def deploy(port, config_path, ca=None, march="xtensawin", frozen=False, reset=True, out=None,
           log=print, index=None, kwh=None, force=False):
    # The tree stays as built until its files are on the board: a `make build` beside it
    # would otherwise remove the Unix port's HAL a Unix-port board is about to get
    # (tools/build_device.py tree_lock()).
    tree = out or os.path.join(ROOT, "build", "device-" + (march or "bytecode"))
    with build_device.tree_lock(tree):
        return _deploy(port, config_path, ca, march, frozen, reset, tree, log, index, kwh, force)


def _deploy(port, config_path, ca, march, frozen, reset, tree, log, index, kwh, force):
    if not port:
        raise DeployError("no PORT given (e.g. make deploy PORT=/dev/ttyUSB0 CONFIG=...)")
    if not config_path:
        raise DeployError("no CONFIG given (e.g. CONFIG=devices/meter-0001.json; "
                          "tools/meterconfig.py makes one)")
    cfg, errors = check_file(config_path)
    if cfg is None and errors == ["%s: no such file" % config_path]:
        raise DeployError(errors[0])
    if errors:
        raise DeployError("%s is not a valid meter config; nothing was sent:\n  %s"
                          % (config_path, "\n  ".join(errors)))
    start = starting_index(cfg, index, kwh)
    if ca:
        if not cfg["tb_tls"]:
            raise DeployError("CA given but tb_tls is false in %s" % config_path)
        check_ca(ca)
    elif shipped_ca_applies(cfg):
        ca = shipped_ca(log)
    n = build_device.build(tree, march or None)
    log("deploy: built %s (%d file(s) compiled)" % (os.path.relpath(tree, ROOT), n))

    code = device_files(tree, skip_firmware=frozen)
    mpys = [r for _l, r in device_files(tree) if r.endswith(".mpy")]
    # Files that would shadow what runs: sources next to the new .mpy files; with a frozen
    # image, any firmware/ module on the filesystem (sys.path has '' before '.frozen').
    shadows = [r[:-4] + ".py" for r in mpys] + (mpys if frozen else [])
    info = probe(port, ([cfg["tb_ca"]] if cfg["tb_tls"] else []) + shadows)
    code = for_platform(code, info.get("platform"))
    check_board(info, code + umqtt_files(tree))
    per = cfg["pulses_per_kwh"]
    old_raw = info.get("index_raw")
    had, note = read_index_record(None if old_raw is None else binascii.unhexlify(old_raw))
    if start is not None:
        if start < had and not force:
            raise DeployError(
                "the board already counts %d pulses (%s kWh), more than %d (%s kWh): the "
                "server would see the register go backwards. Nothing was changed. Check the "
                "meter's register; FORCE=1 sets it anyway (a board moved from another meter)"
                % (had, kwh_text(had, per), start, kwh_text(start, per)))
        if note:
            log("deploy: %s" % note)
    files = list(code)
    if not frozen:
        files += lib_files(tree, "microdot")  # setup mode's page server; no stock image has it
    if info.get("umqtt"):
        log("deploy: umqtt.simple is built into the board's firmware; not copied")
    else:
        files += umqtt_files(tree)
        log("deploy: the board's firmware has no umqtt.simple; installing it to lib/umqtt")
    files.append((os.path.abspath(config_path), "config.json"))
    if cfg["tb_tls"]:
        if ca:
            files.append((os.path.abspath(ca), cfg["tb_ca"]))
        elif cfg["tb_ca"] not in info.get("exists", []):
            raise DeployError("tb_tls is on and the board has no %s: pass CA=<server CA, DER>"
                              % cfg["tb_ca"])
    dirs = sorted({r.rsplit("/", 1)[0] for _l, r in files if "/" in r})
    dirs = sorted({"/".join(d.split("/")[:i + 1]) for d in dirs
                   for i in range(d.count("/") + 1)})
    gone = [s for s in shadows if s in info.get("exists", [])]
    # The firmware deployed now is the one that runs: an OTA slot record (bootslot.py) from an
    # update over the air would keep booting the slot instead.
    args = ["exec", _PREPARE % (json.dumps(dirs), json.dumps(gone + ["state/bootslot.json"]))]
    for local, remote in files:
        args += ["+", "fs", "cp", local, ":" + remote]
    if start is not None:
        args += ["+", "exec", _SET_INDEX % (repr(old_raw), _RECORD_MAX,
                                            binascii.hexlify(index_record(start)).decode())]
    if reset:
        args += ["+", "reset"]
    p = mpremote(port, *args)
    same = sum(1 for line in p.stdout.splitlines() if line.startswith("Up to date:"))
    for s in gone:
        log("deploy: removed %s (it would shadow the firmware)" % s)
    log("deploy: %d file(s) copied, %d unchanged, to %s%s"
        % (len(files) - same, same, port, "; board reset" if reset else ""))
    if start is not None:
        if "INDEX:SET" not in p.stdout:
            raise DeployError("the pulse index on the board changed during the deploy (the meter "
                              "ran: its watchdog restarts it after wdt_timeout_s at the prompt); "
                              "the index was not set: run make deploy again")
        log("deploy: pulse index set to %d (%s kWh at %d pulses per kWh); the board had %d%s"
            % (start, kwh_text(start, per), per, had, " (FORCE)" if start < had else ""))
    return {"copied": len(files) - same, "unchanged": same, "umqtt_builtin": info.get("umqtt"),
            "board": info, "index": start, "index_before": had}


# --- status ------------------------------------------------------------------------------------

_REPORT = "from firmware import report\nreport.main()"


def read_status(port, reset=True):
    # The report interrupts the meter (Ctrl-C); the reset after it starts the meter again.
    p = mpremote(port, "exec", _REPORT, *(("+", "reset") if reset else ()), check=False)
    out = p.stdout + p.stderr
    if "ImportError" in out and "firmware" in out:
        raise DeployError("no meter firmware on the board at %s (run make deploy)" % port)
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise DeployError("the board at %s did not report its state:\n%s" % (port, out.strip()))


def format_status(s):
    rows = []
    if s.get("current_fw_version") is not None:
        reported = s.get("fw_reported")
        rows.append(("firmware", "%s %s%s" % (
            s.get("current_fw_title"), s["current_fw_version"], "" if reported is None else
            ", reported to ThingsBoard" if reported else ", not reported yet (sent once connected)")))
    else:
        rows.append(("firmware", "unknown (older than version reporting: make deploy)"))
    cfg = s.get("config") or {}
    if "error" in cfg:
        rows.append(("config", cfg["error"]))
    elif "errors" in cfg:
        rows.append(("config", "INVALID (the meter is halted)"))
        rows += [("", e) for e in cfg["errors"]]
    else:
        rows.append(("device", cfg.get("device_name") or "meter-<MAC> (name from the chip)"))
        rows.append(("CUPS", cfg.get("cups")))
        rows.append(("Wi-Fi", "%s (password %s)" % (cfg.get("wifi_ssid"),
                                                    cfg.get("wifi_password", "none"))))
        rows.append(("ThingsBoard", "%s:%s, %s" % (cfg.get("tb_host"), cfg.get("tb_port"),
                                                   "TLS" if cfg.get("tb_tls") else "PLAIN")))
        if "telemetry_topic" in cfg:  # compare with the device profile's MQTT topic filters
            rows.append(("topics", "telemetry %s, attributes %s" % (
                cfg["telemetry_topic"], cfg.get("attributes_topic"))))
        rows.append(("pulses", "pin %s, %s per kWh, report every %s s" % (
            cfg.get("pulse_pin"), cfg.get("pulses_per_kwh"), cfg.get("publish_interval_s"))))
        for k in ("provision_key", "provision_secret", "supplier_key", "access_token",
                  "mqtt_client_id", "mqtt_username", "mqtt_password"):
            if k in cfg:
                rows.append((k.replace("_", " "), cfg[k]))
    prov = s.get("provisioned")
    if s.get("ready_credentials"):
        rows.append(("credentials", "%s from config.json (never provisioned)" % s.get("credentials")))
    else:
        rows.append(("provisioned", "yes (%s)" % s.get("credentials") if prov else "no"))
    if s.get("attributes_sent"):
        cur = s.get("attributes_current")
        rows.append(("attributes", "sent" + ("" if cur is None else
                                             ", current" if cur else ", OUTDATED (resent at boot)")))
    else:
        rows.append(("attributes", "not sent yet"))
    index = s.get("pulse_index")
    rows.append(("pulse index", "%s%s" % (index, " (%s kWh)" % s["energy_kwh"]
                                          if s.get("energy_kwh") is not None else "")))
    rows.append(("last error", s.get("last_error") or "none"))
    if s.get("heap_free") is not None:
        rows.append(("heap free", "%s bytes" % s["heap_free"]))
    return "\n".join("%-17s %s" % (k, v) for k, v in rows)


# --- selftest ----------------------------------------------------------------------------------

_SELFTEST = "from firmware import selftest\nselftest.main(%r)"
SELFTEST_TIMEOUT_S = 300  # the checks take under 2 minutes; Wi-Fi alone may take 30 s
_REPORT_LINE = ("PASS ", "FAIL ", "SKIP ", "self-test:")


def selftest(port, pin=None, out=print, timeout_s=SELFTEST_TIMEOUT_S):
    """Run the board self-test; returns {"PASS": n, "FAIL": n, "SKIP": n}."""
    if not port:
        raise DeployError("no PORT given (e.g. make selftest PORT=/dev/ttyUSB0 SELFTEST_PIN=5)")
    if pin is not None:
        if not re.fullmatch(r"[0-9]{1,2}", str(pin)):
            raise DeployError("SELFTEST_PIN=%s: the GPIO number the jumper wire starts from "
                              "(e.g. SELFTEST_PIN=5)" % pin)
        pin = int(pin)
    # Streamed, not captured: a technician sees each line as the board prints it (joining
    # Wi-Fi alone may take 30 s). The reset runs after the report, from mpremote.
    cmd = [MPREMOTE, "connect", port, "exec", _SELFTEST % pin, "+", "reset"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout_s, p.kill)
    timer.start()
    lines = []
    try:
        for raw in p.stdout:
            line = raw.rstrip("\r\n")
            lines.append(line)
            if line.startswith(_REPORT_LINE):
                out(line)
        p.wait()
    finally:
        timer.cancel()
    text = "\n".join(lines)
    summary = [l for l in lines if l.startswith("self-test: ") and " PASS, " in l]
    if summary:
        counts = dict(zip(("PASS", "FAIL", "SKIP"), map(int, re.findall(r"(\d+) [A-Z]", summary[-1]))))
        return counts
    # No report: the board is not left stopped at the prompt (nor to its watchdog).
    subprocess.run([MPREMOTE, "connect", port, "reset"], capture_output=True, timeout=30,
                   stdin=subprocess.DEVNULL)
    if "ImportError" in text and "selftest" in text:
        raise DeployError("the firmware on the board at %s has no self-test (older than this "
                          "checkout): make deploy first" % port)
    if "ImportError" in text and "firmware" in text:
        raise DeployError("no meter firmware on the board at %s (run make deploy)" % port)
    if p.returncode and p.returncode < 0:
        raise DeployError("the self-test on %s did not finish within %d s:\n%s"
                          % (port, timeout_s, text.strip()))
    raise DeployError("the self-test on %s did not finish:\n%s" % (port, text.strip()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--port", default="")
    d.add_argument("--config", required=True)
    d.add_argument("--ca", help="the server's CA certificate (DER), copied as tb_ca; default for "
                                "ThingsBoard Cloud: the shipped bundle (tools/cloud_ca.py)")
    d.add_argument("--march", default="xtensawin", help="mpy-cross -march ('' for none)")
    d.add_argument("--frozen", action="store_true",
                   help="the firmware image has firmware/ frozen in: copy only the boot "
                        "loader (main.py, boot.py, bootslot.mpy) and the config")
    d.add_argument("--no-reset", action="store_true")
    d.add_argument("--index", help="starting pulse index (board swap, after make flash): the "
                                   "meter's register in pulses")
    d.add_argument("--kwh", help="the same in kWh, converted exactly with pulses_per_kwh")
    d.add_argument("--force", action="store_true",
                   help="set --index/--kwh even below the index the board already has")
    s = sub.add_parser("status")
    s.add_argument("--port", default="")
    s.add_argument("--json", action="store_true", help="print the board's JSON as it is")
    s.add_argument("--no-reset", action="store_true",
                   help="leave the board at the REPL afterwards (the meter stays stopped)")
    t = sub.add_parser("selftest")
    t.add_argument("--port", default="")
    t.add_argument("--pin", help="the GPIO a jumper wire connects to pulse_pin (the test drives "
                                 "it); without it the pulse check is skipped")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "deploy":
            deploy(a.port, a.config, a.ca, a.march, a.frozen, not a.no_reset, index=a.index,
                   kwh=a.kwh, force=a.force)
        elif a.cmd == "selftest":
            counts = selftest(a.port, a.pin)
            if counts.get("FAIL"):
                print("selftest: %d check(s) FAILED: do what each FAIL line says, then run it "
                      "again; the board was reset and the meter runs" % counts["FAIL"],
                      file=sys.stderr)
                return 1
            print("selftest: no check failed; the board was reset and the meter runs")
        else:
            if not a.port:
                raise DeployError("no PORT given (e.g. make status PORT=/dev/ttyUSB0)")
            st = read_status(a.port, not a.no_reset)
            print(json.dumps(st, indent=2, sort_keys=True) if a.json else format_status(st))
    except DeployError as e:
        print("%s: %s" % (a.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
