"""No secret leaves the meter in full: a meter with secrets made for this run goes through
provisioning, its one-shot attributes, telemetry and a `status` RPC, and none of the Wi-Fi
password, provision key and secret, supplier key, configured or issued access token shows
in the console log, in the telemetry the server stored, or in the RPC reply. The supplier key
goes to the platform once, as the client attribute it is meant for, and nowhere else.

Also the boot warning of a meter allowed to run without TLS (tb_plain_ok)."""

import json
import secrets
import time

from e2e_support import base_config, device_name
from firmware.config import DEFAULT_SUPPLIER_ATTR
from firmware.log import mask
from tbsim import Profile

NAME = device_name()
PIECE = 8  # no run of this many characters of a secret may show (mask() shows 2 + 2)


def leaked(secret, text):
    """The first piece of secret found in text, or None."""
    for i in range(len(secret) - PIECE + 1):
        if secret[i:i + PIECE] in text:
            return secret[i:i + PIECE]
    return None


def test_no_secret_in_the_log_the_telemetry_or_the_status_reply(sim, meters):
    made = {"wifi_password": secrets.token_urlsafe(18), "provision_key": secrets.token_urlsafe(15),
            "provision_secret": secrets.token_urlsafe(15),
            "supplier_key": secrets.token_urlsafe(15),
            "access_token": secrets.token_urlsafe(15)}  # device-supplied: the platform takes it
    sim.add_profile(Profile(made["provision_key"], made["provision_secret"]))
    m = meters(base_config(sim, health_interval_s=5, **made))
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 40), m.text()
    for _ in range(30):
        m.pulse(1)
        time.sleep(0.05)
    assert sim.wait_for(lambda: (sim.device(NAME) or {}).get("latestTelemetry", {})
                        .get("pulses") == 30, 40), m.text()[-2000:]
    assert sim.wait_for(lambda: any("uptime_s" in p["values"] for p in sim.telemetry(NAME)), 20)
    reply = sim.rpc(NAME, "status", timeout_s=15)
    assert reply.get("state") == "run", reply
    time.sleep(0.5)  # the RPC's log line

    dev = sim.device(NAME)
    assert dev["credentials"] == made["access_token"]  # the device-supplied token was used
    console = m.text()
    telemetry = json.dumps(sim.telemetry(NAME))
    rpc = json.dumps(reply)
    # What the meter put on the server besides telemetry: its attributes, except the one
    # the supplier key is meant for. (The platform keeps the credentials and the profile's
    # key by design.)
    others = {"client": {k: v for k, v in dev["clientAttributes"].items()
                         if k != DEFAULT_SUPPLIER_ATTR},
              "shared": dev["sharedAttributes"], "server": dev["serverAttributes"],
              "latest": dev["latestTelemetry"]}
    for field, value in made.items():
        assert leaked(value, console) is None, (field, "console")
        assert leaked(value, telemetry) is None, (field, "telemetry")
        assert leaked(value, rpc) is None, (field, "status RPC reply")
        assert leaked(value, json.dumps(others)) is None, (field, "attributes on the server")
    assert dev["clientAttributes"][DEFAULT_SUPPLIER_ATTR] == made["supplier_key"]
    attribute_posts = [e for e in sim.events("attributes") if e.get("device") == NAME]
    assert len(attribute_posts) == 1  # one-shot
    # What the log does show: the masked forms, so a technician can tell which key is in use.
    assert mask(made["provision_key"]) in console and mask(made["supplier_key"]) in console
    # The meter is on plain MQTT because the config says so, and says so at every boot.
    assert "PLAIN MQTT to 127.0.0.1" in console
    assert "TLS is off (tb_plain_ok): credentials travel in clear text" in console
