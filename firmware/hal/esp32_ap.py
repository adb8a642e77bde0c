# The ESP32's setup access point (docs/esp32.md: access point): the part of the HAL
# (firmware/hal/esp32.py) that only setup mode loads (firmware/setup_mode.py build()), so
# normal operation never holds its names.

import network
import socket

from micropython import const

_CLIENTS = const(2)  # phones on the access point at once


class AccessPoint:
    socket = socket

    def __init__(self, hal):
        self._hal = hal

    def open(self, ssid, password):
        W = network.WLAN
        ap = W(W.IF_AP)
        # config() needs the interface up (ESP-IDF refuses the configuration of an interface the
        # Wi-Fi mode leaves out), and security is set with the key: a key alone leaves the auth
        # mode as it was. Nothing listens before both are done.
        ap.active(True)
        ap.config(ssid=ssid, key=password, security=W.SEC_WPA2, max_clients=_CLIENTS)
        self._hal._wifi()  # AP + STA: scan() and a join of new settings need the station
        return ap.ifconfig()[0], 80, 53

    def close(self):
        try:
            network.WLAN(network.WLAN.IF_AP).active(False)
        except Exception:
            pass

    def scan(self):
        # Blocks for about 2 s with the GIL released (the hardware counter keeps counting).
        try:
            found = self._hal._wifi().scan()  # (ssid, bssid, channel, RSSI, security, hidden)
        except Exception:  # OSError, RuntimeError ("STA is connecting, scan are not allowed")
            return []
        return [(r[0], r[3], r[4] != 0) for r in found]
