"""Provision meters from the bench, over ThingsBoard's HTTP, CoAP or MQTT API, and write each
meter's credentials into its config.json, without the profile's provision key and secret.

    python tools/benchprov.py one devices/meter-0001.json --via http --host thingsboard.cloud --tls
    python tools/benchprov.py batch meters.csv --out devices --via coap --host coap.thingsboard.cloud

A meter that boots with ready credentials never needs the provision secret on its flash; whoever
reads a secret out of one meter's flash can create devices in that profile.

`one` takes a config made by tools/meterconfig.py (it holds provision_key and provision_secret);
`batch` takes the same CSV as `meterconfig.py batch` and writes <out>/<device_name>.json. Every
row is validated before anything is sent (a bad row: nothing is sent at all). Each meter gets one
line saying what ThingsBoard answered. Every meter's line goes to standard output; the exit code is 0 when no meter failed, 1 when
one did (run again: the done ones are skipped), 2 when nothing was sent. A config is only ever
written whole (temporary file,
fsync, rename, mode 0600), and only after SUCCESS: a meter that failed keeps its old file, if any.
A meter whose file already holds credentials and no provision key is skipped, so a re-run
finishes a batch; --force provisions it again (its provision key and secret then come from the
CSV or --defaults).

--offer chooses the credentials sent with the request:
  config    (default) the access_token in the meter's config if it has one (meterconfig
            --generate-token), else none: ThingsBoard generates the token;
  generate  a fresh random token for each meter that has none;
  none      nothing: ThingsBoard generates the token, whatever the config holds;
  basic     MQTT_BASIC: mqtt_client_id / mqtt_username / mqtt_password from the config, the
            missing ones generated (client id: the device name).
"""

import argparse
import json
import os
import secrets
import string
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware import config  # noqa: E402  the meter's own validator: one set of rules
from firmware.log import mask  # noqa: E402
from tools import meterconfig  # noqa: E402
from tools.provclients import TRANSPORTS  # noqa: E402

# The ready-credentials fields of config.json (ACCESS_TOKEN: access_token; MQTT_BASIC: these three).
BASIC_FIELDS = ("mqtt_client_id", "mqtt_username", "mqtt_password")
CREDENTIAL_FIELDS = ("access_token",) + BASIC_FIELDS
PROVISION_FIELDS = ("provision_key", "provision_secret")
_ALNUM = string.ascii_letters + string.digits


class ToolError(Exception):
    pass


# ---- config.json with ready credentials -----------------------------------------------------------

def ready_config(raw, credentials):
    """The meter's config with these credentials, without the provision key and secret.

    credentials: ("ACCESS_TOKEN", token) or ("MQTT_BASIC", {"clientId", "userName", "password"})."""
    out = {k: v for k, v in raw.items() if k not in PROVISION_FIELDS + CREDENTIAL_FIELDS}
    ctype, value = credentials
    if ctype == "ACCESS_TOKEN":
        out["access_token"] = value
    else:
        # ThingsBoard answers "userName"; an empty field is simply absent from the config.
        for field, key in zip(BASIC_FIELDS, ("clientId", "userName", "password")):
            if value.get(key):
                out[field] = value[key]
    return out


def write_config(path, raw):
    """Validate as the meter will, then write atomically with mode 0600: the file is either the old
    one or the whole new one, whatever happens (a crash, a full disk, a power cut)."""
    _cfg, errors = config.validate(raw)
    if errors:
        raise ToolError("; ".join(errors))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(raw, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)
    try:                                  # make the rename itself durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_config(path, limit=64 * 1024):
    """A config file's JSON object, or None when it is absent, too big or not a JSON object."""
    try:
        with open(path, "rb") as f:
            text = f.read(limit + 1)
        if len(text) > limit:
            return None
        obj = json.loads(text.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def has_credentials(raw):
    """A config that is already bench-provisioned: credentials, and no provision key left."""
    return isinstance(raw, dict) and any(raw.get(f) for f in CREDENTIAL_FIELDS) and \
        not any(raw.get(f) for f in PROVISION_FIELDS)


# ---- the request ---------------------------------------------------------------------------------

def _random(n=20):
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def build_request(raw, offer):
    """(ThingsBoard provision request, description of what was offered). Never a JSON null in it:
    ThingsBoard closes the connection silently on one."""
    req = {"deviceName": raw["device_name"], "provisionDeviceKey": raw["provision_key"],
           "provisionDeviceSecret": raw["provision_secret"]}
    token = raw.get("access_token")
    if offer == "generate" and not token:
        token, note = meterconfig.generate_token(), "generated, offered"
    elif offer in ("config", "generate") and token:
        note = "offered"
    elif offer == "basic":
        basic = {"clientId": raw.get("mqtt_client_id") or raw["device_name"],
                 "username": raw.get("mqtt_username") or _random(),
                 "password": raw.get("mqtt_password") or _random()}
        req.update(credentialsType="MQTT_BASIC", **basic)
        return req, "MQTT_BASIC offered"
    else:
        return req, "generated by ThingsBoard"
    req.update(credentialsType="ACCESS_TOKEN", token=token)
    return req, note


def _clean(text, limit=160):
    """Server text for a log line: control characters escaped, length bounded."""
    text = str(text)
    out = "".join(ch if 32 <= ord(ch) != 127 else "\\x%02x" % ord(ch) for ch in text[:limit])
    return out + ("..." if len(text) > limit else "")


def describe_failure(answer, name):
    """One clause for an answer that produced no credentials."""
    kind = answer.kind
    if kind == "reply" and answer.status == "NOT_FOUND":
        return 'NOT_FOUND: "%s" (check provision_key/provision_secret; is provisioning enabled on the ' \
               'device profile?)' % _clean(answer.detail)
    if kind == "reply" and answer.status == "FAILURE":
        return 'FAILURE: "%s" (a device named %s exists already, or the offered token is taken: delete ' \
               'or rename it in ThingsBoard, or --offer another token)' % (_clean(answer.detail), name)
    if kind == "http":
        return "HTTP %s: %s" % (answer.code, _clean(answer.detail) or "no body") + (
            " (ThingsBoard could not read the request)" if answer.code in (400, 500) else "")
    if kind == "coap":
        return "CoAP %s%s" % (answer.code, ": " + _clean(answer.detail) if answer.detail else
                              " with no payload (ThingsBoard could not read the request, or failed)")
    if kind == "connack":
        return "%s (the server refused the provisioning session)" % answer.detail
    if kind == "closed":
        return "%s (ThingsBoard closes the connection on a request it cannot read)" % _clean(answer.detail)
    if kind == "timeout":
        return "timeout: %s" % _clean(answer.detail)
    if kind == "refused":
        return "cannot connect: %s" % _clean(answer.detail)
    return "unusable answer: %s" % _clean(answer.detail)


def credentials_from(answer):
    """("ACCESS_TOKEN", str) or ("MQTT_BASIC", dict) from a SUCCESS reply, or raise ToolError."""
    ctype, value = answer.reply.get("credentialsType"), answer.reply.get("credentialsValue")
    if ctype == "ACCESS_TOKEN" and isinstance(value, str):
        return ctype, value
    if ctype == "MQTT_BASIC" and isinstance(value, dict) and \
            all(isinstance(value.get(k, ""), str) for k in ("clientId", "userName", "password")):
        return ctype, value
    raise ToolError("credentials of type %s cannot go into config.json (the meter uses ACCESS_TOKEN "
                    "or MQTT_BASIC)" % _clean(ctype))


def show(credentials):
    ctype, value = credentials
    if ctype == "ACCESS_TOKEN":
        return "ACCESS_TOKEN %s" % mask(value)
    return "MQTT_BASIC client id %s, user %s, password %s" % (
        _clean(value.get("clientId") or "-"), mask(value.get("userName")), mask(value.get("password")))


def provision_one(path, raw, args, send):
    """Provision one meter and write its file; returns (ok, the line for the technician)."""
    name = raw["device_name"]
    # config.py accepts a config with ready credentials and no provision key (issue 17): to
    # provision, the key and secret must come from the config or --defaults.
    missing = [k for k in PROVISION_FIELDS if raw.get(k) is None]
    if missing:
        return False, "%s: %s: required to provision (in the config or --defaults); nothing sent" \
            % (name, missing[0])
    request, offered = build_request(raw, args.offer)
    answer = send(request)
    if answer.kind != "reply" or answer.status != "SUCCESS":
        return False, "%s: %s; nothing written" % (name, describe_failure(answer, name))
    try:
        credentials = credentials_from(answer)
        write_config(path, ready_config(raw, credentials))
    except (ToolError, OSError) as e:
        return False, "%s: SUCCESS, but %s; the device now exists in ThingsBoard: fix this, delete the " \
                      "device there and run again" % (name, e)
    return True, "%s: SUCCESS over %s: %s (%s) -> %s" % (name, args.via, show(credentials), offered, path)


# ---- command line --------------------------------------------------------------------------------

def _sender(args):
    fn = TRANSPORTS[args.via]
    kw = {"host": args.host, "port": args.port, "timeout": args.timeout}
    if args.via != "coap":
        kw.update(tls=args.tls, cafile=args.ca)
    elif args.tls:
        raise ToolError("--tls: CoAP over DTLS is not supported by this tool")
    return lambda request: fn(request, **kw)


def _defaults(args):
    if not args.defaults:
        return {}
    with open(args.defaults) as f:
        d = json.load(f)
    if not isinstance(d, dict):
        raise ToolError("%s: must hold a JSON object" % args.defaults)
    return d


def _check_for_request(raw):
    """config.validate's verdict on the config as it is before provisioning (with its key)."""
    _cfg, errors = config.validate(raw)
    name = raw.get("device_name")
    if not errors and (not isinstance(name, str) or not name):
        errors = ["device_name: required by this tool (ThingsBoard names the device with it)"]
    if not errors:  # valid as ready credentials is not enough to provision
        errors = ["%s: required to provision (in the config or --defaults)" % k
                  for k in PROVISION_FIELDS if raw.get(k) is None]
    return errors


def cmd_one(args):
    defaults = _defaults(args)
    existing = read_config(args.config)
    if existing is None:
        raise ToolError("%s: missing, unreadable or not a JSON object" % args.config)
    name = existing.get("device_name", args.config)
    if has_credentials(existing) and not args.force:
        print("%s: skipped: %s already has credentials (--force to provision again)" % (name, args.config))
        return 0
    raw = dict(defaults)                     # after a bench provisioning the key is only in --defaults
    raw.update(existing)
    errors = _check_for_request(raw)
    if errors:
        for e in errors:
            print("%s: %s" % (args.config, e), file=sys.stderr)
        print("benchprov: %d problem(s); nothing sent" % len(errors), file=sys.stderr)
        return 2
    ok, line = provision_one(args.config, raw, args, _sender(args))
    print(line, flush=True)
    return 0 if ok else 1


def cmd_batch(args):
    defaults = _defaults(args)
    rows, errors = meterconfig.read_batch(args.csv, defaults, False, args.out)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        print("benchprov: %d problem(s); nothing sent" % len(errors), file=sys.stderr)
        return 2
    send = _sender(args)
    done = skipped = failed = 0
    for path, data, _cfg, _note in rows:
        existing = read_config(path)
        if has_credentials(existing) and not args.force:
            print("%s: skipped: %s already has credentials (--force to provision again)"
                  % (data["device_name"], path))
            skipped += 1
            continue
        if existing and existing.get("access_token") and not data.get("access_token"):
            data["access_token"] = existing["access_token"]      # meterconfig --generate-token's, kept
        ok, line = provision_one(path, data, args, send)
        # Every meter's line on stdout, in order, as soon as it is known (a batch may be long).
        print(line, flush=True)
        done += ok
        failed += not ok
    print("benchprov: %d provisioned, %d skipped, %d failed%s" % (
        done, skipped, failed, " (run again to retry the failed ones)" if failed else ""))
    return 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    sub = ap.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one", help="provision the meter of one config file")
    one.add_argument("config", help="the meter's config.json (from tools/meterconfig.py)")
    batch = sub.add_parser("batch", help="provision every meter of a CSV (meterconfig's columns)")
    batch.add_argument("csv")
    batch.add_argument("--out", default="devices", help="directory of the config files (default devices)")
    for p in (one, batch):
        p.add_argument("--via", choices=sorted(TRANSPORTS), required=True, help="ThingsBoard API to use")
        p.add_argument("--host", required=True,
                       help="ThingsBoard host (Cloud: thingsboard.cloud for http, coap.thingsboard.cloud, "
                            "mqtt.thingsboard.cloud)")
        p.add_argument("--port", type=int, help="default: 80/443 http, 5683 coap, 1883/8883 mqtt")
        p.add_argument("--tls", action="store_true", help="https or MQTT over TLS (the server is verified)")
        p.add_argument("--ca", help="CA file (PEM) to verify the server with, instead of the system's")
        p.add_argument("--timeout", type=float, default=10.0, help="overall deadline per meter, s (10)")
        p.add_argument("--offer", choices=("config", "generate", "none", "basic"), default="config",
                       help="credentials sent with the request (see above)")
        p.add_argument("--defaults", help="JSON object of shared fields (provision_key, tb_host, ...)")
        p.add_argument("--force", action="store_true", help="provision meters that have credentials again")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        ap.error("--timeout must be positive")
    try:
        return {"one": cmd_one, "batch": cmd_batch}[args.cmd](args)
    except ToolError as e:
        print("benchprov: %s" % e, file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print("benchprov: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
