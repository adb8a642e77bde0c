# The baseline for `make bench`: the meter's job done the straightforward way, so that every
# figure of the firmware stands beside the same figure for plain code (docs/benchmarks.md).
#
# What a first, working version written from the umqtt.simple examples looks like:
# provision over MQTT, store the token in a file, send the supplier key and CUPS once at QoS 1,
# then every publish interval send energy and power at QoS 1. Naive on purpose, where the
# firmware is not:
# - the interrupt handler bumps a Python int; there is no hardware counter;
# - power is the pulse count of the last interval (count-per-interval), energy a float;
# - payloads are json.dumps of a dict, a new one every time;
# - no backlog: a reading that cannot be sent is gone (the total still is not: it is cumulative);
# - the running total is written to a file after every publish; any error: print, wait, reconnect.
# It is still correct where correctness is cheap (cumulative total, no lost-update race, TLS
# with a verified certificate), so the comparison is about the approach, not about a bug.
#
# The board is firmware/hal/unix.py (flash, pulse pin, sleep), as for the firmware: on an ESP32
# this code would call machine.Pin.irq and time.sleep_ms instead.

import json
import sys
import time
from binascii import hexlify

from umqtt.simple import MQTTClient

TELEMETRY = b"v1/devices/me/telemetry"
ATTRIBUTES = b"v1/devices/me/attributes"

pulses = 0  # every edge since the meter was installed (restored from flash at boot)


def on_pulse(_pin):
    global pulses
    pulses += 1


def load(name):
    try:
        with open(name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save(name, obj):
    with open(name, "w") as f:
        json.dump(obj, f)


def client(cfg, client_id, user, password):
    params = {}
    if cfg.get("tb_tls", True):
        import ssl
        sys.modules["ussl"] = ssl  # umqtt.simple 1.3.4 imports ussl, gone since MicroPython 1.23
        with open(cfg.get("tb_ca") or "ca.der", "rb") as f:
            params = {"cert_reqs": ssl.CERT_REQUIRED, "cadata": f.read(),
                      "server_hostname": cfg["tb_host"]}
    return MQTTClient(client_id, cfg["tb_host"], cfg.get("tb_port") or 0, user, password,
                      ssl=bool(params), ssl_params=params)


def provision(cfg, name):
    replies = []
    c = client(cfg, "provision", "provision", "")
    c.set_callback(lambda topic, msg: replies.append(msg))
    c.connect()
    c.subscribe(b"/provision/response")
    c.publish(b"/provision/request", json.dumps({
        "provisionDeviceKey": cfg["provision_key"],
        "provisionDeviceSecret": cfg["provision_secret"], "deviceName": name}))
    while not replies:
        c.wait_msg()
    c.disconnect()
    reply = json.loads(replies[0])
    if reply.get("status") != "SUCCESS":
        raise RuntimeError("provisioning: %s" % reply.get("status"))
    return reply["credentialsValue"]


def connect(cfg, name, token):
    c = client(cfg, name, token, "")
    c.connect()
    return c


def send_attributes(c, cfg):
    c.publish(ATTRIBUTES, json.dumps({
        cfg.get("attr_supplier_key", "Power_suppier_secret_key"): cfg["supplier_key"],
        cfg.get("attr_cups_key", "CUPs"): cfg["cups"]}), qos=1)


def cycle(c, cfg, last, interval_s):
    """One telemetry cycle: publish what the last interval counted, then save the total."""
    total = pulses
    per_kwh = cfg.get("pulses_per_kwh", 1000)
    c.publish(TELEMETRY, json.dumps({
        "energy_kwh": total / per_kwh,
        "power_w": (total - last) * 3600000 / per_kwh / interval_s,
        "pulses": total}), qos=1)
    save("total.json", total)
    return total


def run(hal, cfg, name):
    token = load("token.json")
    if token is None:
        token = provision(cfg, name)
        save("token.json", token)
    c = connect(cfg, name, token)
    if load("attributes.json") is None:
        send_attributes(c, cfg)
        save("attributes.json", True)
    interval_s = cfg.get("publish_interval_s", 60)
    last = pulses
    while True:
        last = cycle(c, cfg, last, interval_s)
        hal.sleep_ms(interval_s * 1000)


def main():
    global pulses
    from firmware.hal.unix import Hal

    hal = Hal()
    hal.mount()
    cfg = load("config.json")
    pulses = load("total.json") or 0
    hal.pulse_input(cfg["pulse_pin"], True, "falling", on_pulse, False)
    name = "meter-" + hexlify(hal.unique_id()).decode()
    print("baseline: %s starting, %d pulses on flash" % (name, pulses))
    while True:
        try:
            run(hal, cfg, name)
        except Exception as e:
            print("baseline: %s %s; retrying in 5 s" % (type(e).__name__, e))
            hal.sleep_ms(5000)
