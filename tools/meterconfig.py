"""Make the config.json of one meter, or of a batch of meters, checked before anything is written.

    python tools/meterconfig.py one --out devices --name meter-0001 --cups ES... \\
        --supplier-key ... --wifi-ssid ... --wifi-password ... \\
        --provision-key ... --provision-secret ... --pulse-pin 4 [--generate-token]
    python tools/meterconfig.py batch meters.csv --out devices [--defaults site.json] [--generate-token]
    python tools/meterconfig.py check devices/meter-0001.json [...]
    python tools/meterconfig.py label devices/meter-0001.json [...]

Every field is validated by firmware/config.py, the code the meter itself runs at boot: a
file this tool writes is one the meter accepts, warnings included. A batch with any bad row
writes nothing; every bad row is reported with its line number. Device names, CUPS and
credentials must be unique across the batch and every config already in the output folder
(so across batches too); `check` holds the files it is given, and the other configs in their
folders, to the same rule. Files are written with mode 0600 (they hold the Wi-Fi password,
the provisioning secret and the supplier key) into a 0700 directory, and secrets are only
ever printed masked (firmware.log.mask).

CSV columns: device_name, cups, supplier_key, wifi_ssid, wifi_password; any other config.json
field may be a column too (provision_key, provision_secret, pulse_pin, access_token, tb_host,
...). Empty cells take the value from --defaults, then the firmware default. --defaults is a
JSON object of fields shared by the batch (e.g. provision_key, provision_secret, pulse_pin).

Credentials: provision_key and provision_secret (the device profile's) let the meter provision
itself. Ready credentials instead (access_token alone, or mqtt_client_id/mqtt_username/
mqtt_password for MQTT_BASIC) are used as they are and the meter never provisions.

--generate-token gives each meter its own device access token from a cryptographic RNG
(secrets module). The meter offers it when it provisions and falls back to it after a
FAILURE, so a meter that lost its flash recovers by itself. An existing file's token is kept
when the file is rewritten (--force), because the platform already knows it.

Every meter also gets its own setup_password, from the same RNG: the WPA2 key of the access
point it opens to be set up from a phone (README: setting Wi-Fi from a phone). It is kept when
the file is rewritten, printed masked like every secret, and in full only by `label`, which
prints what goes on the meter's label: the device name, its setup network and that password.
"""

import argparse
import csv
import glob
import json
import os
import re
import secrets
import string
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware import config  # noqa: E402  the meter's own validator: one set of rules
from firmware.config import escape  # noqa: E402
from firmware.log import mask  # noqa: E402
from firmware.setup_ssid import ap_ssid  # noqa: E402  the access point's name, as the meter makes it

TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 20  # 119 bits; ThingsBoard's own generated tokens are 20 characters too
# The setup password is typed on a phone: lower case and digits without look-alikes (l 1 o 0),
# 16 of them (80 bits) in groups of four: "k7qm-x2rt-9hvw-pe4a".
SETUP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
SETUP_GROUPS = 4
CSV_REQUIRED = ("device_name", "cups", "supplier_key", "wifi_ssid", "wifi_password")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class ConfigToolError(Exception):
    pass


def generate_token():
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def generate_setup_password():
    return "-".join("".join(secrets.choice(SETUP_ALPHABET) for _ in range(4))
                    for _ in range(SETUP_GROUPS))


def coerce(name, text):
    """A CSV cell or command-line value as the JSON type config.json holds for this field.

    Only the type is decided here; whether the value is acceptable is config.validate's job,
    so a cell that is not a number stays a string and gets the firmware's own message."""
    spec = config.FIELDS.get(name)
    if spec is None:
        return text  # unknown field: config.validate names it
    kind = spec[0]
    if kind in (config._INT, config._OPTINT, config._PIN, config._OPTPIN):  # noqa: SLF001
        try:
            return int(text.strip())
        except ValueError:
            return text
    if kind == config._BOOL:  # noqa: SLF001  kinds are part of FIELDS
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return text
    return text


def build(raw, existing=None, generate=False, new_token=False, warnings=None):
    """Validate one meter's fields. Returns (dict to write, config with defaults, errors,
    token note). The dict holds only the fields given (firmware defaults apply to the rest)."""
    raw = dict(raw)
    note = ""
    errors = []
    if generate and raw.get("access_token") is None:
        if raw.get("provision_key") is None:
            errors.append("access_token: --generate-token makes a token the meter offers when "
                          "it provisions; without provision_key the platform would never know "
                          "it (give the token the platform issued as access_token instead)")
        old = (existing or {}).get("access_token")
        if old and not new_token:
            raw["access_token"] = old
            note = "kept"
        else:
            raw["access_token"] = generate_token()
            note = "generated"
    elif raw.get("access_token") is not None:
        note = "given"
    if raw.get("setup_password") is None:
        old = (existing or {}).get("setup_password")
        raw["setup_password"] = old if isinstance(old, str) and old else generate_setup_password()
    cfg, more = config.validate(raw, warnings)
    errors += more
    name = raw.get("device_name")
    if not errors:
        if not isinstance(name, str) or not name:
            errors.append("device_name: required by this tool (it names the file)")
        elif not _FILE_NAME.match(name):
            errors.append("device_name: use letters, digits, '.', '_' and '-' only "
                          "(it names the file)")
    if not errors:
        raw["cups"] = cfg["cups"]  # the compact form config.validate made
    return raw, cfg, errors, note


def identities(cfg):
    """What must be unique across meters: (what, value) pairs. A CUPS names its supply point
    by its first 20 characters (the last 2 are the border point and type)."""
    out = []
    if cfg.get("device_name"):
        out.append(("device_name", cfg["device_name"]))
    if cfg.get("cups"):
        out.append(("cups", cfg["cups"][:20]))
    if cfg.get("access_token"):
        out.append(("access_token", cfg["access_token"]))
    if cfg.get("mqtt_client_id") or cfg.get("mqtt_username"):
        out.append(("mqtt_client_id/mqtt_username",
                    (cfg.get("mqtt_client_id"), cfg.get("mqtt_username"))))
    return out


def folder_configs(folder, skip=()):
    """{(what, value): [paths]} over every valid meter config in folder but those in skip
    (files that are not meter configs, such as site defaults, are left out)."""
    taken = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        if os.path.abspath(path) in skip:
            continue
        cfg, errors = config.load(path)
        if errors:
            continue
        for ident in identities(cfg):
            taken.setdefault(ident, []).append(path)
    return taken


def _same_as(what, other):
    return "%s: same as %s%s" % (what, other, " (credentials must be unique)"
                                 if what not in ("device_name", "cups") else "")


def _read_json(path, limit=1 << 16):
    # Every file read with a size limit, these too (site defaults, an existing config).
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigToolError("%s: larger than %d bytes" % (path, limit))
    return json.loads(data)


def _existing(path):
    try:
        return _read_json(path, config._MAX_FILE)  # noqa: SLF001
    except (OSError, ValueError, ConfigToolError):
        return None


def write_private(path, obj):
    """Write JSON with mode 0600, atomically (a reader never sees half a file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or an older file said
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)


def summary(cfg, note=""):
    """One line for the technician: identity and masked secrets, never a secret in full."""
    parts = [cfg["device_name"] or "(name from MAC)", cfg["cups"],
             "wifi %s/%s" % (escape(cfg["wifi_ssid"]), mask(cfg["wifi_password"])
                             if cfg["wifi_password"] else "open")]
    if cfg["provision_key"] is not None:
        parts += ["key %s" % mask(cfg["provision_key"]),
                  "secret %s" % mask(cfg["provision_secret"])]
    parts.append("supplier %s" % mask(cfg["supplier_key"]))
    if cfg["access_token"]:
        how = note if cfg["provision_key"] is not None else "ready: never provisions"
        parts.append("token %s%s" % (mask(cfg["access_token"]), " (%s)" % how if how else ""))
    if cfg.get("mqtt_client_id") or cfg.get("mqtt_username"):
        parts.append("MQTT_BASIC client %s user %s password %s (ready: never provisions)" % (
            mask(cfg.get("mqtt_client_id")), mask(cfg.get("mqtt_username")),
            mask(cfg.get("mqtt_password"))))
    if cfg["setup_password"]:
        parts.append("setup %s/%s" % (ap_ssid(cfg["device_name"]) if cfg["device_name"]
                                      else "meter-<MAC>-setup", mask(cfg["setup_password"])))
    return ", ".join(parts)


def _print_warnings(where, warnings):
    for w in warnings:
        print("%s: warning: %s" % (where, w), file=sys.stderr)


def label(cfg):
    """What goes on the meter's label, the setup password in full: the one place it is shown."""
    name = cfg["device_name"]
    lines = [name or "(device name from the MAC)",
             "  CUPS            %s" % cfg["cups"],
             "  setup Wi-Fi     %s (WPA2)" % (ap_ssid(name) if name else "meter-<MAC>-setup")]
    if cfg["setup_password"]:
        lines.append("  setup password  %s" % cfg["setup_password"])
    else:
        lines.append("  setup password  none: this meter cannot be set up from a phone "
                     "(meterconfig one/batch --force adds one)")
    return "\n".join(lines)


# --- batch ----------------------------------------------------------------------------------

def read_batch(csv_path, defaults=None, generate=False, out_dir=None, new_token=False):
    """Check every row. Returns (list of (file path, dict, cfg, note), list of error lines)."""
    errors = []
    rows = []
    out_dir = out_dir or "."
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            return [], ["%s:1: missing column(s): %s" % (csv_path, ", ".join(missing))]
        seen = {}
        paths = []
        for row in reader:
            line = reader.line_num
            if None in row:
                errors.append("%s:%d: more cells than columns" % (csv_path, line))
                continue
            raw = dict(defaults or {})
            for k, v in row.items():
                k = (k or "").strip()
                v = (v or "").strip()
                if v != "":
                    raw[k] = coerce(k, v)
            if not any((v or "").strip() for v in row.values()):
                continue  # blank line
            path = os.path.join(out_dir, "%s.json" % raw.get("device_name", ""))
            warnings = []
            data, cfg, errs, note = build(raw, _existing(path), generate, new_token, warnings)
            for e in errs:
                errors.append("%s:%d: %s" % (csv_path, line, e))
            if errs:
                continue
            for w in warnings:
                print("%s:%d: warning: %s" % (csv_path, line, w), file=sys.stderr)
            for ident in identities(cfg):
                if ident in seen:
                    errors.append("%s:%d: %s" % (csv_path, line,
                                                 _same_as(ident[0], "line %d" % seen[ident])))
                else:
                    seen[ident] = line
            rows.append((path, data, cfg, note))
            paths.append(os.path.abspath(path))
    # Across batches: the configs already in the output folder, but for the files this batch
    # rewrites (they exist only with --force, and their own values do not count twice).
    taken = folder_configs(out_dir, skip=paths)
    for path, _data, cfg, _note in rows:
        for ident in identities(cfg):
            if ident in taken:
                errors.append("%s: %s" % (path, _same_as(ident[0], taken[ident][0])))
    if not rows and not errors:
        errors.append("%s: no meters in the file" % csv_path)
    return rows, errors


def cmd_batch(a):
    defaults = _read_json(a.defaults) if a.defaults else {}
    if not isinstance(defaults, dict):
        raise ConfigToolError("%s: must hold a JSON object" % a.defaults)
    rows, errors = read_batch(a.csv, defaults, a.generate_token, a.out, a.new_token)
    if not errors and not a.force:
        for path, _data, _cfg, _note in rows:
            if os.path.exists(path):
                errors.append("%s: exists (use --force to rewrite; its token is kept)" % path)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        print("meterconfig: %d problem(s); nothing written" % len(errors), file=sys.stderr)
        return 1
    for path, data, cfg, note in rows:
        write_private(path, data)
        print("%s: %s" % (path, summary(cfg, note)))
    print("meterconfig: %d config file(s) written to %s" % (len(rows), a.out))
    return 0


# --- one meter ----------------------------------------------------------------------------------

_ONE_FLAGS = ("device_name", "cups", "supplier_key", "wifi_ssid", "wifi_password",
              "provision_key", "provision_secret", "pulse_pin", "tb_host", "tb_port",
              "access_token")


def cmd_one(a):
    raw = _read_json(a.defaults) if a.defaults else {}
    for field in _ONE_FLAGS:
        v = getattr(a, field)
        if v is not None:
            raw[field] = coerce(field, v)
    for item in a.set or ():
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigToolError("--set %s: expected FIELD=VALUE" % item)
        raw[k.strip()] = coerce(k.strip(), v)
    path = a.file or os.path.join(a.out, "%s.json" % raw.get("device_name", ""))
    existing = _existing(path)
    if existing is not None and not a.force:
        raise ConfigToolError("%s: exists (use --force to rewrite; its token is kept)" % path)
    warnings = []
    data, cfg, errors, note = build(raw, existing, a.generate_token, a.new_token, warnings)
    if not errors:
        taken = folder_configs(os.path.dirname(path) or ".", skip=(os.path.abspath(path),))
        for ident in identities(cfg):
            if ident in taken:
                errors.append(_same_as(ident[0], taken[ident][0]))
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        print("meterconfig: %d problem(s); nothing written" % len(errors), file=sys.stderr)
        return 1
    _print_warnings(path, warnings)
    write_private(path, data)
    print("%s: %s" % (path, summary(cfg, note)))
    return 0


def check_file(path, warnings=None):
    """Validate a config file as the meter will (read with the meter's size limit). Returns
    (cfg, errors); a missing file is the one error "<path>: no such file"."""
    cfg, errors = config.load(path, warnings)
    # The firmware names the file as its log line would (escaped, cut at 80 characters); a
    # technician's terminal gets the whole path.
    shown = config.escape(path) + ": "
    return cfg, [path + ": " + e[len(shown):] if e.startswith(shown) else e for e in errors]


def cmd_check(a):
    bad = 0
    given = []
    for path in a.files:
        warnings = []
        cfg, errors = check_file(path, warnings)
        if errors:
            bad += 1
            for e in errors:
                print(e if e.startswith(path + ": ") else "%s: %s" % (path, e), file=sys.stderr)
            continue
        _print_warnings(path, warnings)
        given.append((path, cfg))
        mode = os.stat(path).st_mode & 0o777
        warn = "  (warning: mode %03o; secrets inside: chmod 600)" % mode if mode & 0o077 else ""
        if not cfg["setup_password"]:
            warn += "  (warning: no setup_password: no setting Wi-Fi from a phone; --force adds one)"
        print("%s: ok: %s%s" % (path, summary(cfg), warn))
    # Unique across the files given and the other configs in their folders.
    owner = {}
    for folder in sorted({os.path.dirname(p) or "." for p, _cfg in given}):
        for ident, paths in folder_configs(folder).items():
            owner.setdefault(ident, set()).update(os.path.abspath(p) for p in paths)
    for path, cfg in given:
        for ident in identities(cfg):
            owner.setdefault(ident, set()).add(os.path.abspath(path))
    clashes = set()
    for path, cfg in given:
        for ident in identities(cfg):
            others = sorted(owner[ident] - {os.path.abspath(path)})
            if others:
                clashes.add(path)
                print("%s: %s" % (path, _same_as(ident[0], os.path.relpath(others[0]))),
                      file=sys.stderr)
    return 1 if bad or clashes else 0


def cmd_label(a):
    bad = 0
    for path in a.files:
        cfg, errors = check_file(path)
        if errors:
            bad += 1
            for e in errors:
                print("%s: %s" % (path, e), file=sys.stderr)
            continue
        print(label(cfg))
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    one = sub.add_parser("one", help="config for one meter from flags")
    one.add_argument("--out", default="devices", help="directory (file: <device_name>.json)")
    one.add_argument("--file", help="write exactly this file instead")
    one.add_argument("--defaults", help="JSON object of shared fields (site defaults)")
    one.add_argument("--name", dest="device_name")
    for field in _ONE_FLAGS[1:]:
        one.add_argument("--" + field.replace("_", "-"), dest=field)
    one.add_argument("--set", action="append", metavar="FIELD=VALUE",
                     help="any other config.json field (repeatable)")

    batch = sub.add_parser("batch", help="configs for many meters from a CSV")
    batch.add_argument("csv")
    batch.add_argument("--out", default="devices")
    batch.add_argument("--defaults", help="JSON object of fields shared by every row")

    for p in (one, batch):
        p.add_argument("--generate-token", action="store_true",
                       help="give each meter its own random access token")
        p.add_argument("--new-token", action="store_true",
                       help="with --generate-token: replace a token already in the file")
        p.add_argument("--force", action="store_true", help="rewrite existing files")

    check = sub.add_parser("check", help="validate config files as the meter will")
    check.add_argument("files", nargs="+")

    lab = sub.add_parser("label", help="the label text: name, setup network, setup password")
    lab.add_argument("files", nargs="+")

    a = ap.parse_args(argv)
    try:
        return {"one": cmd_one, "batch": cmd_batch, "check": cmd_check,
                "label": cmd_label}[a.cmd](a)
    except ConfigToolError as e:
        print("meterconfig: %s" % e, file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print("meterconfig: %s: no such file" % e.filename, file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print("meterconfig: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
