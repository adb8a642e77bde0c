"""python -m bench.setup_heap   (about 3 minutes): the heap setup mode needs, on the Unix port.

Setup mode (firmware/setup_mode.py) boots a meter with no usable Wi-Fi settings and plays what
a phone does: the page, a form the validator refuses, a wrong password, the right one. Run at
one -X heapsize after another (8 KB steps, bisected), it reports the smallest heap that gets
through it with no MemoryError, and, at the e2e tests' SETUP_HEAP, the live heap once the access
point is open (the "heap free" of the meter's own log line, after a collection).
"""

import http.client
import json
import os
import sys
import tempfile
import time

from lab.meterhost import VirtualMeter, ensure_device_tree

CONFIG = {"tb_host": "127.0.0.1", "tb_port": 1883, "tb_tls": False, "tb_plain_ok": True,
          "provision_key": "pk-0001", "provision_secret": "ps-0001", "supplier_key": "sk-0001",
          "cups": "ES0021000000012345DZ0F", "pulse_pin": 4, "setup_password": "abcd-efgh-jkmn-pqrs",
          "device_name": "meter-0001"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _http(port, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request(method, "/wifi" if method == "POST" else "/", body=body,
              headers=dict(FORM, Host="127.0.0.1:%d" % port))
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, text


def _token(page):
    return page.split('name="token" value="', 1)[1].split('"', 1)[0]


def play(heap, device, workdir):
    """(True when the phone's whole visit worked, live heap bytes at the page or None)."""
    m = VirtualMeter(workdir, CONFIG, device, uid="5e0000000001", heap=heap)
    m.set_wifi(("site-wifi", -48, "site-password-1"), ("neighbour", -80, "neighbour-pw-1"))
    m.auto_restart = False
    try:
        m.power_on()
        opened = m.wait_for("page at http", 20)
        if not opened:
            return False, None
        live = int(heap.rstrip("K")) * 1024 - int(opened.rsplit("heap free ", 1)[1])
        port = m.ap_port
        _s, page = _http(port)
        _s, page = _http(port, "POST", "token=%s&ssid=site-wifi&password=short" % _token(page))
        assert "wifi_password" in page
        _s, page = _http(port, "POST", "token=%s&ssid=site-wifi&password=wrong-pw-99"
                         % _token(page))
        if not m.wait_for("the old settings are kept", 20):
            return False, None
        _s, page = _http(port)
        _s, _page = _http(port, "POST", "token=%s&ssid=site-wifi&password=site-password-1"
                          % _token(page))
        ok = bool(m.wait_for("config.json saved", 20))
        time.sleep(0.5)
        return ok and "MemoryError" not in m.text(), live
    except (OSError, AssertionError, IndexError):
        return False, None
    finally:
        m.close()


def main():
    device = ensure_device_tree()
    tmp = tempfile.mkdtemp(prefix="setup-heap-")
    tried = {}
    lo, hi = 96, 176  # KB: the first known to fail (below normal operation's), the e2e heap
    ok, live = play("%dK" % hi, device, os.path.join(tmp, "at-%d" % hi))
    tried[hi] = ok
    if not ok:
        sys.exit("setup_heap: setup mode failed at the e2e heap of %d KB" % hi)
    while hi - lo > 8:
        mid = (lo + hi) // 2 // 8 * 8
        tried[mid], _ = play("%dK" % mid, device, os.path.join(tmp, "at-%d" % mid))
        if tried[mid]:
            hi = mid
        else:
            lo = mid
    out = {"setup_min_heapsize_bytes": hi * 1024, "setup_live_heap_at_open_bytes": live,
           "tried": " ".join("%dK:%s" % (k, "ok" if v else "fail") for k, v in sorted(tried.items()))}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
