"""Setting the Wi-Fi from a phone: the meter's own access point and setup page (firmware/
setup_mode.py), on the real firmware, in a real browser.

The story the README tells the technician: the site changed its Wi-Fi password, the meter
cannot join for setup_after_s, opens meter-<id>-setup (WPA2, the password on its label), the
phone opens the page by itself (captive-portal redirect, DNS answer), the technician picks the
network, types a wrong password (the page says so, nothing changes), then the right one: the
meter joins, keeps the new settings and reports again, and no pulse is lost on the way.

Headless Chromium from Debian's packages (.ci/run installs it), driven by playwright (pinned
in requirements.txt, using the system chromium: nothing is downloaded), at a phone's viewport.

Setup mode runs with SETUP_HEAP, the meter's 110 KB plus the room a TLS handshake takes on an
ESP32 (40 to 50 KB of the IDF heap, in this 64-bit port's sizes): setup mode never runs with a
TLS session open, so the board's heap can grow into that room (README: benchmarks, setup mode).
"""

import http.client
import json
import os
import random
import shutil
import socket
import struct
import time

import pytest

from e2e_support import base_config
from lab.meterhost import PulseTrain
from tools.meterconfig import generate_setup_password

SETUP_HEAP = "176K"
NAME = "meter-0001"
SSID = "meter-0001-setup"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu"]
PROBES = [("connectivitycheck.gstatic.com", "/generate_204"),  # Android
          ("captive.apple.com", "/hotspot-detect.html"),  # Apple
          ("www.msftconnecttest.com", "/connecttest.txt"),  # Windows
          ("www.msftncsi.com", "/ncsi.txt"),
          ("detectportal.firefox.com", "/success.txt")]  # Firefox


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, ("no chromium: the browser test needs Debian's chromium package "
                  "(apt-get install chromium; .ci/run installs it)")
    return path


@pytest.fixture
def phone():
    """A phone's browser: a page at a phone's size, with every request it makes recorded."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        ctx = browser.new_context(**PHONE)
        page = ctx.new_page()
        page.requests = []
        page.on("request", lambda r: page.requests.append(r.url))
        yield page
        browser.close()


def get(port, path="/", host=None, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    h = {"Host": host or "127.0.0.1:%d" % port}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data.decode("utf-8", "replace")


def dns_ask(port, name, qtype=1):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\x00" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(512)
    finally:
        s.close()


def wait_ap(m, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ap = m.access_point()
        if ap is not None and m.wait_for("page at http", 0.2):
            return ap
        time.sleep(0.2)
    raise AssertionError("no access point:\n" + m.text()[-3000:])


def flash_config(m):
    return json.loads(m.read_file("config.json"))


def server_index(sim):
    t = sim.device(NAME)
    return t["latestTelemetry"].get("pulses") if t else None


def test_a_phone_recovers_a_meter_whose_site_changed_its_wifi_password(sim, meters, phone,
                                                                         tmp_path):
    label_pw = generate_setup_password()  # what tools/meterconfig.py puts on the label
    m = meters(base_config(sim, device_name=NAME, wifi_ssid="site-wifi",
                           wifi_password="old-password-1", setup_password=label_pw,
                           setup_after_s=30), heap=SETUP_HEAP)
    m.set_wifi(("site-wifi", -48, "old-password-1"), ("neighbour", -79, "neighbour-pass-1"))
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    train = PulseTrain(m, 1000, lambda t: 18_000.0)  # 5 pulses/s, all along
    train.start()
    assert sim.wait_for(lambda: (server_index(sim) or 0) > 0, 20)

    # The site changes its password. The meter keeps trying, then opens its access point.
    t_change = time.time()
    m.set_wifi(("site-wifi", -48, "new-password-2"), ("neighbour", -79, "neighbour-pass-1"))
    ap = wait_ap(m)
    assert time.time() - t_change >= 30  # setup_after_s of failed joins first
    assert m.count(r"could not join site-wifi \(wrong password\)", t_change) >= 1
    assert ap["ssid"] == SSID and ap["security"] == "WPA2" and ap["password"] == label_pw
    port = ap["http"]

    # The phone joins and checks for a captive portal: every probe is sent to the page.
    for host, path in PROBES:
        status, headers, _ = get(port, path, host=host)
        assert status == 302 and headers["location"] == "http://127.0.0.1:%d/" % port, host
    r = dns_ask(ap["dns"], "connectivitycheck.gstatic.com")
    assert r[:2] == b"\x12\x34" and r[-4:] == socket.inet_aton("127.0.0.1")

    # The page, at a phone's size: the meter's state and the networks in range.
    resp = phone.goto("http://127.0.0.1:%d/generate_204" % port)  # as the phone's portal view
    assert resp.ok and phone.url == "http://127.0.0.1:%d/" % port
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert phone.text_content("#device") == NAME
    assert phone.text_content("#version")
    assert phone.text_content("#provisioned") == "yes (token)"
    assert phone.text_content("#attributes") == "yes"
    assert int(phone.text_content("#pulses")) > 0
    assert phone.text_content("#energy").endswith(" kWh")
    assert phone.text_content("#wifi").startswith("site-wifi")
    assert "could not join site-wifi" in phone.text_content("#why")
    nets = phone.locator("label.net").all_text_contents()
    assert any("site-wifi" in n and "-48 dBm" in n for n in nets) and len(nets) == 2
    shot = str(tmp_path / "setup-page.png")
    phone.screenshot(path=shot, full_page=True)
    if os.getenv("SETUP_SCREENSHOT"):  # make the README's picture: docs/img/setup-page.png
        shutil.copyfile(shot, os.getenv("SETUP_SCREENSHOT"))
    assert all(u.startswith("http://127.0.0.1:%d/" % port) for u in phone.requests), phone.requests

    # A wrong password: the page says why, and nothing changes on the meter.
    phone.locator("label.net", has_text="site-wifi").click()
    phone.fill("#password", "wrong-password-9")
    phone.click("button[type=submit]")
    phone.wait_for_selector("#message.err", timeout=30_000)
    assert phone.text_content("#message") == (
        "Could not join site-wifi: wrong password. The old settings are kept.")
    assert flash_config(m)["wifi_password"] == "old-password-1"
    assert phone.locator("input[name=ssid][value=site-wifi]").is_checked()  # ready to retry
    assert phone.input_value("#password") == ""  # never echoed

    # The right one: the meter joins, keeps the settings, leaves setup and reports again.
    t_join = time.time()
    phone.fill("#password", "new-password-2")
    phone.click("button[type=submit]")
    phone.wait_for_selector("#message.ok", timeout=30_000)
    assert phone.text_content("#message").startswith("Joined site-wifi. The new settings are saved")
    assert m.wait_for(r"leaving setup mode \(new Wi-Fi settings work\)", 30, t_join), m.text()
    assert m.wait_for(r"state: \S+ -> run", 30, t_join), m.text(t_join)
    assert m.access_point() is None
    cfg = flash_config(m)
    assert cfg["wifi_ssid"] == "site-wifi" and cfg["wifi_password"] == "new-password-2"
    assert cfg["setup_password"] == label_pw and cfg["pulse_pin"] == 4  # the rest as it was
    t_back = time.time()
    assert sim.wait_for(lambda: any(e["ts"] >= t_back * 1000 for e in sim.telemetry(NAME)
                                    if e.get("ts")), 30)

    # Not one pulse lost through all of it: the server ends on the count played. Lost: only
    # those of the two resets' own windows (into setup mode and out of it: from the firmware's
    # last save to the next boot's pulse input; a board's PCNT is reset with the chip,
    # firmware/hal/unix.py), a pulse or two at 5 pulses/s: none of setup mode's.
    train.stop()
    assert sim.wait_for(lambda: server_index(sim) == m.pulses_delivered, 40), \
        (m.pulses_delivered, server_index(sim))
    assert m.pulses_lost_off <= 10 and m.pulses_delivered > 100, \
        (m.pulses_lost_off, m.pulses_before_input, m.pulses_delivered)
    for secret in ("old-password-1", "new-password-2", "wrong-password-9", label_pw):
        assert secret not in m.text()
    assert len(sim.events("provision")) == 1  # the device is the same one


def raw(port, data, read=True, timeout=15):
    """Send bytes as they are; what came back (b"" when the meter closed without a word)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed on us mid-send: the meter refused the rest
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def heap_free(m, since):
    lines = [l for t, l in m.lines if t >= since and "heap free" in l]
    return int(lines[-1].rsplit("heap free ", 1)[1]) if lines else None


def token_of(page):
    return page.split('name="token" value="', 1)[1].split('"', 1)[0]


def test_hostile_http_and_dns_neither_crash_the_meter_nor_grow_its_heap(sim, meters):
    pw = generate_setup_password()
    cfg = base_config(sim, device_name=NAME, setup_password=pw)
    del cfg["wifi_ssid"]  # no usable Wi-Fi settings: setup mode at once
    m = meters(cfg, heap=SETUP_HEAP)
    m.set_wifi(("site-wifi", -48, "site-password-1"))
    m.power_on()
    ap = wait_ap(m, 30)
    port, dns = ap["http"], ap["dns"]
    train = PulseTrain(m, 1000, lambda t: 18_000.0)  # 5 pulses/s through every attack
    train.start()
    status, _h, page = get(port)
    assert status == 200
    t0 = time.time()
    assert m.wait_for("setup: open [0-9]+ s", 40), m.text()  # the first heap figure, at rest
    before = heap_free(m, t0)
    rng = random.Random(19)

    # Oversized: a line with no end, too many headers, bodies too large or negative.
    raw(port, b"GET /" + b"a" * 65536)
    raw(port, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 300 + b"\r\n")
    r = raw(port, b"POST /wifi HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 10000000\r\n\r\n"
            % port + b"x" * 100_000)
    assert r == b"" or b" 413 " in r.split(b"\r\n", 1)[0]
    for cl in (b"-5", b"abc", b"99999999999999999999"):
        raw(port, b"POST /wifi HTTP/1.1\r\nContent-Length: " + cl + b"\r\n\r\nabc")
    # Garbage, and requests that parse but make no sense.
    for _ in range(20):
        raw(port, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))))
    for line in (b"GET /\xff\xfe HTTP/1.1", b"\x00\x01\x02", b"GET", b"GET / HTTP/9.9 x",
                 b"BREW /pot HTTP/1.1", b"GET /?a=%zz&scan=%%%% HTTP/1.1"):
        raw(port, line + b"\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    for method in ("HEAD", "OPTIONS", "PUT", "DELETE"):
        assert get(port, "/", method=method)[0] in (200, 204, 404, 405)

    # Forms that did not come from this page's form: all refused, nothing changes.
    form = "application/x-www-form-urlencoded"
    attempts = [("ssid=site-wifi&password=site-password-1", {}),  # no token
                ("token=0123456789abcdef&ssid=site-wifi&password=site-password-1", {}),
                ("token=%s&ssid=site-wifi&password=site-password-1" % token_of(page),
                 {"Origin": "http://evil.example"}),  # another site's page
                ("token=%zz&ssid=%ff", {})]
    for body, extra in attempts:
        status, _h, text = get(port, "/wifi", method="POST", body=body,
                               headers=dict({"Content-Type": form}, **extra))
        assert status == 403 and "Refused" in text, (status, text[:200])
    status, h, _ = get(port, "/wifi", method="POST", host="evil.example",  # DNS rebinding
                       body="token=%s&ssid=x&password=y" % token_of(get(port)[2]),
                       headers={"Content-Type": form})
    assert status == 302 and h["location"] == "http://127.0.0.1:%d/" % port
    one = token_of(get(port)[2])
    assert get(port, "/wifi", method="POST", body="token=%s&ssid=x&password=short" % one,
               headers={"Content-Type": form})[0] == 400  # a fresh token: the validator speaks
    assert get(port, "/wifi", method="POST", body="token=%s&ssid=x&password=short" % one,
               headers={"Content-Type": form})[0] == 403  # each token once
    assert flash_config(m).get("wifi_ssid") is None

    # Slow and many: clients that dribble, and more connections than the meter serves at once.
    slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(6)]
    for i in range(12):
        for s in slow:
            try:
                s.send(b"GET / HTTP/1.1\r\n"[i:i + 1])
            except OSError:
                pass
        time.sleep(1)
    for s in slow:
        s.close()
    crowd = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(30)]
    for s in crowd:
        s.close()

    # DNS: garbage, truncations, a pointer to itself, a flood; then a proper question.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        u.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600))), ("127.0.0.1", dns))
    u.sendto(b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
             ("127.0.0.1", dns))
    for _ in range(500):
        u.sendto(b"\x00\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
                 ("127.0.0.1", dns))
    u.close()
    time.sleep(2)
    r = dns_ask(dns, "captive.apple.com")
    assert r[-4:] == socket.inet_aton("127.0.0.1")

    # Still there, still the same size, never reset, every pulse counted.
    status, _h, page = get(port)
    assert status == 200 and 'id="device">%s<' % NAME in page
    t1 = time.time()
    assert m.wait_for("setup: open [0-9]+ s", 40, t1), m.text(t0)
    after = heap_free(m, t1)
    assert after >= before - 2048, (before, after)  # nothing kept from any of it
    assert m.boots == 1 and m.exits == []
    assert m.count("bad request", t0) <= (time.time() - t0) / 10 + 2  # one line per 10 s at most
    text = m.text()
    assert "MemoryError" not in text and "Traceback" not in text

    # And the page still does its job: the right settings, then the meter reports.
    tok = token_of(page)
    status, h, _ = get(port, "/wifi", method="POST", headers={"Content-Type": form},
                       body="token=%s&ssid=site-wifi&password=site-password-1" % tok)
    assert status == 303 and h["location"] == "/"
    assert m.wait_for(r"state: \S+ -> run", 60), m.text()
    train.stop()
    assert sim.wait_for(lambda: server_index(sim) == m.pulses_delivered, 40), \
        (m.pulses_delivered, server_index(sim))
    assert m.pulses_lost_off <= 10, \
        (m.pulses_lost_off, m.pulses_before_input)  # only in the resets' own windows


def test_the_boot_button_opens_setup_only_when_the_meter_is_not_reporting(sim, meters):
    m = meters(base_config(sim, device_name=NAME, setup_password=generate_setup_password()),
               heap=SETUP_HEAP)
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    t = time.time()
    m.press_button(True)
    time.sleep(11)
    m.press_button(False)
    assert m.wait_for(r"setup mode not opened \(BOOT button held 10 s\): the meter is connected "
                      r"and reporting", 5, t), m.text(t)
    assert m.access_point() is None and "re-provisioning requested" not in m.text(t)
    m.set_net("down")  # the site's Wi-Fi is gone: now the button opens setup
    assert m.wait_for(r"state: \S+ -> wifi", 30, t), m.text(t)
    t = time.time()
    m.press_button(True)
    ap = wait_ap(m, 30)
    m.press_button(False)
    assert ap["ssid"] == SSID
    assert m.wait_for(r"BOOT button held 10 s: resetting into setup mode", 1, t)
    (t_reset,) = [tt for tt, line in m.lines if tt >= t and "resetting into setup mode" in line]
    assert 10 <= t_reset - t < 13
    assert m.wait_for(r"setup: setup mode: BOOT button held 10 s", 1, t)
