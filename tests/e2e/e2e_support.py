"""Shared values and helpers for the end-to-end tests (imported by conftest and the tests)."""

from firmware.cups import check_letters

KEY, SECRET = "meter-profile-key-01", "meter-profile-secret-01"
SUPPLIER = "supplier-secret-key-0001"


def cups_for(n):
    digits = "0021%012d" % n
    return "ES" + digits + check_letters(digits) + "0F"


def base_config(sim, **over):
    cfg = {"wifi_ssid": "sim-net", "wifi_password": "sim-wifi-password", "tb_host": "127.0.0.1",
           "tb_port": sim.mqtt_port, "tb_tls": False, "tb_plain_ok": True,
           "provision_key": KEY, "provision_secret": SECRET, "supplier_key": SUPPLIER,
           "cups": cups_for(1), "pulse_pin": 4, "publish_interval_s": 5,
           "persist_interval_s": 10, "retry_min_s": 1, "retry_max_s": 10, "health_interval_s": 0}
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


def device_name(uid="a1b2c3d4e5f6"):
    return "meter-" + uid
