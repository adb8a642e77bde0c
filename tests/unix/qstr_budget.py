# Runs on the MicroPython Unix port against the device tree (the .mpy files as deployed):
# loads every module the firmware can ever load, checks a config as the boot does (secrets
# with all kinds of characters), compiles main.py (the boot loader; firmware/entry.py, which
# it runs, comes compiled like the rest), and prints MicroPython's interned-name table.
# tests/unix/test_on_unix_port.py holds the count against the budget; main.py says why.

import micropython

import bootslot  # noqa: F401
import firmware.attributes  # noqa: F401
import firmware.backlog  # noqa: F401
import firmware.backlog_flash  # noqa: F401
import firmware.backoff  # noqa: F401
import firmware.config
import firmware.connect  # noqa: F401  (loaded for each connect)
import firmware.connecting  # noqa: F401  (loaded in the connect and attributes states)
import firmware.entry  # noqa: F401  (main.py runs it)
import firmware.credentials  # noqa: F401
import firmware.cups  # noqa: F401
import firmware.gesture  # noqa: F401
import firmware.hal.unix  # noqa: F401  (not hal/unix_faults: only the flash-fault tests load it)
import firmware.link  # noqa: F401
import firmware.log  # noqa: F401
import firmware.ota  # noqa: F401
import firmware.ota_check  # noqa: F401  (loaded for each of its steps)
import firmware.supervisor  # noqa: F401
import firmware.pipeline  # noqa: F401
import firmware.clock  # noqa: F401
import firmware.sync  # noqa: F401  (loaded for each NTP exchange)
import firmware.states  # noqa: F401
import firmware.wiring  # noqa: F401
import firmware.pacing  # noqa: F401
import firmware.provision  # noqa: F401
import firmware.pulses  # noqa: F401
import firmware.readings  # noqa: F401
import firmware.remote  # noqa: F401
import firmware.reply  # noqa: F401
import firmware.startup  # noqa: F401
import firmware.led  # noqa: F401
import firmware.store  # noqa: F401
import firmware.telemetry  # noqa: F401
import umqtt.simple  # noqa: F401

_ALL = "".join("%c" % c for c in range(33, 127))  # every printable character, in secrets
cfg, errors = firmware.config.validate({
    "wifi_ssid": "site wifi " + _ALL[:20], "wifi_password": _ALL[20:80],
    "provision_key": _ALL, "provision_secret": _ALL[3:] + _ALL[:3], "supplier_key": _ALL[5:90],
    "access_token": _ALL[10:70], "device_name": "meter-" + _ALL[40:60],
    "cups": "ES0021000000012345DZ0F", "pulse_pin": 4})
assert not errors, errors
# main.py's own names, as the board's compile of it at boot interns them (its last line, the
# call of main(), left out).
with open("main.py") as f:
    _src = f.read().rstrip()
assert _src.endswith("\nmain()")
exec(compile(_src[:-6], "main.py", "exec"), {"__name__": "main"})
micropython.qstr_info()
