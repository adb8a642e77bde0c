# The name of the setup access point (firmware/setup_mode.py), which tools/meterconfig.py also
# prints for the meter's label: the same function on the meter and in the tool.

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]  (CPython fallback below)
except ImportError:  # CPython: tools/meterconfig.py
    def const(value):
        return value

_ID_MAX = const(20)  # "meter-" + 20 + "-setup": 32 bytes, the longest SSID


def ap_ssid(device_name):
    """meter-<id>-setup, where <id> is the device name without a leading "meter-"
    (meter-0001 -> meter-0001-setup; the default name meter-<MAC> -> meter-<MAC>-setup), cut to
    the 32 bytes an SSID may have and to letters, digits, '-', '_' and '.', so that the name on
    the label is the name the phone lists."""
    raw = device_name.encode()
    if raw[:6] == b"meter-":
        raw = raw[6:]
    out = bytearray()
    for b in raw:  # over bytes: iterating a str would intern one-character strings
        if 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"-_.":
            out.append(b)
            if len(out) == _ID_MAX:
                break
    return "meter-%s-setup" % (out.decode() or "x")
