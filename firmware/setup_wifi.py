# New Wi-Fi settings in setup mode: checked with the firmware's own rules, tried, kept.
#
# In that order. config.json is written only after the meter joined the network with the new
# settings, so a power cut while they are being tried leaves the old file as it was, and a
# failed try writes nothing: the old settings are kept. The write itself is atomic (a temp
# file, closed, then renamed over config.json: LittleFS renames atomically, as firmware/
# store.py relies on), so a cut during it leaves the old file or the new one, never a mix.
#
# The same join machinery retries the configured network now and then (firmware/setup_mode.py):
# a site whose router was only down for a while gets its meter back without anyone's help.

import json
import os

from micropython import const

_CONFIG = const("config.json")
_TMP = const("config.json.tmp")
_MAX_FILE = const(8192)  # more than any valid config (every field at its longest)
_JOIN_MS = const(20000)  # a join that has not worked by then has failed
_SURE_MS = const(4000)  # earlier, the driver's status may still be the last attempt's
_DEFINITE = ("wrong password", "access point not found")  # hal.wifi_status(): no use waiting


def read_config():
    """config.json as a dict (at most _MAX_FILE bytes of it), or None."""
    try:
        # The size first: read(n) allocates n bytes up front, whatever the file holds.
        if os.stat(_CONFIG)[6] > _MAX_FILE:
            return None
        with open(_CONFIG) as f:
            text = f.read()
    except OSError:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def save(raw):
    """Write config.json atomically. None, or why it failed."""
    try:
        with open(_TMP, "w") as f:  # `with` closes it: an unclosed file is empty after a reset
            f.write(json.dumps(raw))
        # power cut here: config.json untouched; the stray .tmp is replaced by the next save
        os.rename(_TMP, _CONFIG)
    except OSError as e:
        return "flash error %s" % e
    if read_config() != raw:
        return "config.json reads back different"
    return None


class WifiSettings:
    def __init__(self, hal, log):
        self._hal = hal
        self._log = log
        self.trying = None  # the network being joined
        self.result = None  # (worked, network, why) of the last attempt, for the page
        self._since = 0
        self._new = None  # config.json to write if the join works; None: nothing to write

    def check(self, ssid, password):
        """(config.json with these settings, the validator's errors)."""
        raw = read_config()
        if raw is None:
            return None, ["config.json could not be read"]
        raw["wifi_ssid"] = ssid
        raw["wifi_password"] = password
        # Only the two fields the page changes are checked, with the validator's own rules
        # for them (firmware/config.py: FIELDS, the wifi_password check in validate(), both
        # through firmware/utf8.py): the rest of the file passed the whole validator at this
        # boot (firmware/startup.py), and nothing else writes config.json in setup mode. The
        # whole validator takes 27 KB of heap to load on the 64-bit port, by far the most a
        # form's request held, more than setup mode has to spare (README: benchmarks, setup
        # mode); these rules take about 2 KB. tests/portable/test_setup.py holds the two to
        # the same verdict.
        from firmware import unload, utf8
        errors = []
        why = utf8.error(ssid, (1, 32, 2))
        if why is not None:
            errors.append("wifi_ssid: " + why)
        why = utf8.error(password, (0, 63, 2))
        if why is not None:
            errors.append("wifi_password: " + why)
        elif password and len(password.encode()) < 8:
            errors.append("wifi_password: must be empty (open network) or 8 to 63 characters")
        del utf8
        unload("utf8")
        errors.sort()  # as the validator gives them
        return raw, errors

    def start(self, now, ssid, password, new=None):
        """Start joining (new: the config to write once it works). Polled by poll()."""
        self.trying = ssid
        self.result = None
        self._since = now
        self._new = new
        try:
            self._hal.wifi_connect(ssid, password)
        except OSError as e:  # the ESP32's driver refuses a join while it is busy
            self._end(False, "the radio refused (%s)" % e)

    def poll(self, now):
        """None while nothing has ended; True when a join just worked (and the new settings
        are on flash); False when it just failed (and nothing was written)."""
        if self.trying is None:
            return None
        hal = self._hal
        if hal.wifi_connected():
            new, self._new = self._new, None
            why = save(new) if new is not None else None
            if why is not None:
                self._log.error("setup", "joined %s but could not save the settings: %s",
                                self.trying, why)
                hal.wifi_disconnect()
                return self._end(False, "the settings could not be saved (%s)" % why)
            return self._end(True, "")
        waited = hal.ticks_diff(now, self._since)
        status = hal.wifi_status()  # before disconnect(), which makes it "idle" on the ESP32
        if waited >= _JOIN_MS or (waited >= _SURE_MS and status in _DEFINITE):
            hal.wifi_disconnect()
            self._new = None
            return self._end(False, status)
        return None

    def _end(self, worked, why):
        self.result = (worked, self.trying, why)
        self.trying = None
        return worked
