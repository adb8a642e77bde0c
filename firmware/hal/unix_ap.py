# The setup access point on the MicroPython Unix port: the part of the HAL (firmware/hal/unix.py)
# that only setup mode loads (firmware/setup_mode.py build()), so normal operation never holds
# its names. The page is served on loopback: HTTP on
# METER_AP_PORT (default 8080), DNS on METER_DNS_PORT (5353), and what a phone would see of the
# access point (name, security, password, ports) is written as JSON to the file METER_AP names
# (lab/meterhost.py reads it); close() removes it. The scan lists METER_NET's scripted networks.

import os
import socket


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
        return [(n[2], int(n[1]), n[3] != b"") for n in hal._net_state[1:] if len(n) == 4]
