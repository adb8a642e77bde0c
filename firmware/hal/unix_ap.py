# The setup access point on the MicroPython Unix port, and the site's scripted networks: the
# part of the HAL (firmware/hal/unix.py) that only setup mode, or a METER_NET script listing
# networks, loads, so that normal operation holds neither its code nor its names. The page is served on loopback: HTTP on
# METER_AP_PORT (default 8080), DNS on METER_DNS_PORT (5353), and what a phone would see of the
# access point (name, security, password, ports) is written as JSON to the file METER_AP names
# (lab/meterhost.py reads it); close() removes it. The scan lists METER_NET's scripted networks.

import os
import socket


def _networks(hal):
    # METER_NET's lines after the state: "net<TAB>rssi<TAB>ssid<TAB>password"
    return [n.split("\t") for n in hal._net_state.split("\n")[1:] if n[:4] == "net\t"]


def wifi_connected(hal):
    """The join asked for (hal._wifi_on: ssid, password) works with the site's networks."""
    if not hal._wifi_on or hal._net() == "down":
        return False
    for n in _networks(hal):
        if len(n) == 4 and n[2] == hal._wifi_on[0]:
            return n[3] == hal._wifi_on[1]
    return False


def wifi_status(hal):
    if hal.wifi_connected():
        return "connected"
    if hal._wifi_on and hal._net() != "down":
        for n in _networks(hal):
            if len(n) == 4 and n[2] == hal._wifi_on[0]:
                return "wrong password"
    return "access point not found"


class AccessPoint:
    socket = socket  # its own radio: the station's scripted Wi-Fi does not gate it

    def __init__(self, hal):
        self._hal = hal

    def open(self, ssid, password):
        http = int(os.getenv("METER_AP_PORT") or 8080)
        dns = int(os.getenv("METER_DNS_PORT") or 5353)
        path = os.getenv("METER_AP")
        if path:
            import json
            with open(path + ".tmp", "w") as f:
                f.write(json.dumps({"ssid": ssid, "security": "WPA2", "password": password,
                                    "http": http, "dns": dns}))
            os.rename(path + ".tmp", path)
        return "127.0.0.1", http, dns

    def close(self):
        path = os.getenv("METER_AP")
        if path:
            try:
                os.remove(path)
            except OSError:
                pass

    def scan(self):
        hal = self._hal
        if hal._net() == "down":
            return []
        return [(n[2], int(n[1]), n[3] != "") for n in _networks(hal) if len(n) == 4]
