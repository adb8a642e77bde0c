"""Put the meter firmware and one meter's config on a board with mpremote; read its status.

    python tools/deploy.py deploy --port PORT --config devices/meter-0001.json [--ca ca.der]
                                  [--march xtensawin] [--frozen] [--no-reset]
    python tools/deploy.py status --port PORT [--json]

deploy, in this order, and nothing on the board is changed until every check passed:
1. the config is validated by firmware/config.py (the meter's own rules) and, with TLS, the CA
   file is checked to be DER (the board's mbedTLS rejects PEM). Without --ca, a meter that
   talks TLS to ThingsBoard Cloud (tb_host mqtt.thingsboard.cloud, tb_ca ca.der) gets the CA
   bundle that ships with the firmware, build/ca/thingsboard-cloud.der (tools/cloud_ca.py);
2. firmware/, lib/umqtt and lib/microdot are compiled with mpy-cross (tools/build_device.py);
3. the board is asked (read-only) for its .mpy version and architecture, whether its firmware
   already has umqtt.simple, and whether the CA file is on it; an incompatible board stops here;
4. one mpremote session creates the folders, removes firmware/*.py sources that would shadow
   the new .mpy files, copies main.py, boot.py, firmware/**/*.mpy, lib/umqtt (only when the
   firmware lacks it), lib/microdot (the setup page's server; with --frozen it is in the
   image), the config as config.json and the CA, then resets the board.
   mpremote's cp compares sha256 on the board and skips unchanged files, so running deploy
   again copies only what changed.

status runs firmware/report.py on the board (mpremote interrupts main.py with Ctrl-C; main.py
lets KeyboardInterrupt through, so the board lands in the REPL), prints its JSON summary for a
technician, and resets the board so the meter runs again (--no-reset leaves it at the REPL).
Secrets arrive masked by the board; nothing is written there.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware.config import DEFAULT_HOST, FIELDS  # noqa: E402
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
    for name in ("boot.py", "main.py"):
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


def probe(port, paths):
    p = mpremote(port, "exec", _PROBE % json.dumps(paths))
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
           log=print):
    if not port:
        raise DeployError("no PORT given (e.g. make deploy PORT=/dev/ttyUSB0 CONFIG=...)")
    if not config_path:
        raise DeployError("no CONFIG given (e.g. CONFIG=devices/meter-0001.json; "
                          "tools/meterconfig.py makes one)")
    cfg, errors = check_file(config_path)
    if errors:
        raise DeployError("%s is not a valid meter config; nothing was sent:\n  %s"
                          % (config_path, "\n  ".join(errors)))
    if ca:
        if not cfg["tb_tls"]:
            raise DeployError("CA given but tb_tls is false in %s" % config_path)
        check_ca(ca)
    elif shipped_ca_applies(cfg):
        ca = shipped_ca(log)
    tree = out or os.path.join(ROOT, "build", "device-" + (march or "bytecode"))
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
    args = ["exec", _PREPARE % (json.dumps(dirs), json.dumps(gone))]
    for local, remote in files:
        args += ["+", "fs", "cp", local, ":" + remote]
    if reset:
        args += ["+", "reset"]
    p = mpremote(port, *args)
    same = sum(1 for line in p.stdout.splitlines() if line.startswith("Up to date:"))
    for s in gone:
        log("deploy: removed %s (it would shadow the firmware)" % s)
    log("deploy: %d file(s) copied, %d unchanged, to %s%s"
        % (len(files) - same, same, port, "; board reset" if reset else ""))
    return {"copied": len(files) - same, "unchanged": same, "umqtt_builtin": info.get("umqtt"),
            "board": info}


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
        rows.append(("pulses", "pin %s, %s per kWh, report every %s s" % (
            cfg.get("pulse_pin"), cfg.get("pulses_per_kwh"), cfg.get("publish_interval_s"))))
        for k in ("provision_key", "provision_secret", "supplier_key", "access_token"):
            if k in cfg:
                rows.append((k.replace("_", " "), cfg[k]))
    prov = s.get("provisioned")
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
                   help="the firmware image has firmware/ frozen in: copy only main.py, "
                        "boot.py and the config")
    d.add_argument("--no-reset", action="store_true")
    s = sub.add_parser("status")
    s.add_argument("--port", default="")
    s.add_argument("--json", action="store_true", help="print the board's JSON as it is")
    s.add_argument("--no-reset", action="store_true",
                   help="leave the board at the REPL afterwards (the meter stays stopped)")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "deploy":
            deploy(a.port, a.config, a.ca, a.march, a.frozen, not a.no_reset)
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
