# The meter's state as a technician needs it: `make status` runs report.main() on the board
# through mpremote (the "status" RPC has its own, firmware/remote.py).
# Secrets are masked (firmware.log.mask); nothing here writes to flash.

import json

from firmware.log import mask

_CONFIG_FILE = "config.json"


def summary(store, mem_free=None, path=_CONFIG_FILE):
    """A dict describing firmware, config, credentials, attributes and firmware markers, pulse
    index and last error."""
    from firmware import attributes, config, version
    out = {}
    out["current_fw_title"] = version.TITLE
    out["current_fw_version"] = version.VERSION
    cfg, errors = config.load(path)  # read with a size limit, as at boot
    if cfg is None and len(errors) == 1 and errors[0].endswith(": no such file"):
        out["config"] = {"error": errors[0]}
    else:
        if errors:
            out["config"] = {"errors": errors}
            cfg = None
        else:
            shown = {}
            for k in ("wifi_ssid", "tb_host", "tb_port", "tb_tls", "device_name", "cups",
                      "pulse_pin", "pulses_per_kwh", "publish_interval_s"):
                shown[k] = cfg[k]
            # Always shown: a profile whose topic filters differ gets PUBACKs and stores nothing
            # (docs/thingsboard.md §6), so these are what to compare with the device profile.
            for k in ("telemetry_topic", "attributes_topic"):
                shown[k] = cfg.get(k) or config.FIELDS[k][1]
            for k in config.SECRET_FIELDS:
                if cfg.get(k):  # not an open network's empty password
                    shown[k] = mask(cfg[k])
            out["config"] = shown
    creds = store.read("creds")
    ready = cfg.get("credentials") if cfg is not None else None
    if ready is not None:
        # Ready credentials in config.json: what the meter connects with, never provisioned.
        out["ready_credentials"] = True
        creds = ready
    out["provisioned"] = isinstance(creds, dict)
    if out["provisioned"]:
        out["credentials"] = creds.get("type")
    attrs = store.read("attrs")
    out["attributes_sent"] = isinstance(attrs, dict)
    if out["attributes_sent"] and cfg is not None and creds:
        out["attributes_current"] = attrs.get("hash") == attributes.marker(cfg, creds)
    if creds:
        # This firmware's title and version acknowledged by the platform for these credentials.
        out["fw_reported"] = attributes.AttributeMarker(store).is_sent(None, creds)
    rec = store.read("pulses")
    out["pulse_index"] = rec.get("index") if isinstance(rec, dict) else 0
    if cfg is not None:
        from firmware.pulses import energy_text
        out["energy_kwh"] = energy_text(out["pulse_index"] or 0, cfg["pulses_per_kwh"])
    err = store.read("lasterr")
    out["last_error"] = err.get("msg") if isinstance(err, dict) else None
    if mem_free is not None:
        out["heap_free"] = mem_free()
    return out


def main():
    import gc
    from firmware.store import Store

    class _Quiet:
        def warn(self, tag, msg, *args):
            print("warning: " + (msg % args if args else msg))

    gc.collect()
    s = summary(Store(_Quiet()), gc.mem_free)
    print(json.dumps(s))
