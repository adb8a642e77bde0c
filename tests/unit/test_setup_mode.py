"""Setup mode's own loop (firmware/setup_mode.py), stepped by hand with the fake hardware: pulses
counted and saved throughout, the page's settings tried and kept or refused, the configured
network retried only while nobody uses the page, the access point closed by its timeout."""

import json
import os
import sys

import pytest

from fakes import FakeBroker, FakeHal, FakeUmqtt
from harness import BASE, make_cfg
from firmware import setup_mode, wiring
from firmware.log import Log
from firmware.setup_mode import SetupMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "lib"))  # microdot, as make lib fetched it
from firmware.setup_wifi import read_config
from firmware.store import Store

SETUP_PW = "abcd-efgh-jkmn-pqrs"
STEP_MS = 50


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import asyncio
    # MicroPython's asyncio has it (firmware/setup_http.py); the loop is not run here.
    monkeypatch.setattr(asyncio, "wait_for_ms", None, raising=False)


class SiteHal(FakeHal):
    # The station side against a site's networks: (ssid -> (password, rssi)).
    def __init__(self, networks):
        super().__init__()
        self.networks = dict(networks)
        self.join = None
        self.joins = []

    def wifi_connect(self, ssid, password):
        self.join = (ssid, password)
        self.joins.append(ssid)

    def wifi_disconnect(self):
        self.join = None

    def wifi_connected(self):
        return self.join is not None and self.networks.get(self.join[0], (None,))[0] == self.join[1]

    def wifi_status(self):
        if self.wifi_connected():
            return "connected"
        if self.join is not None and self.join[0] in self.networks:
            return "wrong password"
        return "access point not found"


class FakeAp:
    socket = None

    def __init__(self, hal):
        self.hal = hal
        self.opened = None
        self.closed = 0

    def open(self, ssid, password):
        self.opened = (ssid, password)
        return "192.168.4.1", 80, 53

    def close(self):
        self.closed += 1

    def scan(self):
        return [(s.encode(), rssi, True) for s, (_pw, rssi) in self.hal.networks.items()] + [
            (b"", -40, False), (b"\xff\xfe", -41, True), (b"bad\x01name", -42, True)]


class Counters:
    requests = refused = bad = answered = dropped = 0

    def serve(self):
        pass

    def close(self):
        pass


def setup(networks=(("site-wifi", ("new-password-2", -48)), ("neighbour", ("n-password", -80))),
          **over):
    raw = dict(BASE, wifi_password="old-password-1", setup_password=SETUP_PW,
               persist_interval_s=10, **over)
    with open("config.json", "w") as f:
        json.dump(raw, f)
    cfg = make_cfg(wifi_password="old-password-1", setup_password=SETUP_PW, persist_interval_s=10,
                   **over)
    hal = SiteHal(networks)
    lines = []
    log = Log(hal.ticks_ms, lines.append)
    store = Store(log)
    m = setup_mode.build(hal, log, store, dict(cfg, device_name="meter-0001"),
                         "could not join meters for 600 s")
    ap = m._ap = FakeAp(hal)
    m.open()
    m._dns = m._portal = Counters()
    m.lines = lines
    return m, hal, ap


def run(m, hal, ms, every=None):
    """Step for ms of simulated time (every: called each step, e.g. a phone using the page)."""
    end = hal.clock.us + ms * 1000
    while hal.clock.us < end:
        m.step()
        if every is not None:
            every()
        hal.sleep_ms(STEP_MS)


def _plain(obj):
    # An object's own values that are not objects: what it was built with.
    return {k: v for k, v in vars(obj).items()
            if isinstance(v, (int, str, bool, float, type(None), tuple))}


def test_setup_mode_meters_with_the_pipeline_the_meter_builds(monkeypatch):
    # setup_mode.build() makes the reading pipeline through wiring.reading_pipeline, as the
    # normal boot does: the two must stay alike, or pulses would be counted otherwise in setup
    # mode. (The boot id is random: the same here, to compare the rest.)
    import random
    monkeypatch.setattr(random, "random", lambda: 0.25)
    cfg = make_cfg(setup_password=SETUP_PW, pulses_per_kwh=800, pulse_min_interval_ms=30,
                   persist_interval_s=20, buffer_points=100, ntp_host="ntp.test")
    made = []
    for kind in ("setup", "normal"):
        hal = FakeHal()
        log = Log(hal.ticks_ms, lambda line: None)
        if kind == "setup":
            p = setup_mode.build(hal, log, Store(log), cfg, "test").pipeline
        else:
            p = wiring.build(hal, FakeUmqtt(FakeBroker()), log, Store(log), cfg, None).pipeline
        made.append([_plain(o) for o in (p, p.pulses, p.queue, p._clock)] +
                     [type(o).__name__ for o in (p.pulses, p.queue, p._clock, p._payload)] +
                     [p.pulses.hw is None, hal.handler == p.pulses.edge])
    assert made[0] == made[1]


def test_the_access_point_is_wpa2_named_after_the_device_and_lists_the_networks():
    m, _hal, ap = setup()
    assert ap.opened == ("meter-0001-setup", SETUP_PW)
    assert m.networks == [("site-wifi", -48, True), ("neighbour", -80, True)]  # names it can keep
    assert m.state["provisioned"] == "no" and m.state["attributes"] == "no"


def test_pulses_are_counted_and_saved_while_setup_is_open():
    m, hal, _ap = setup()
    for _ in range(25):
        hal.handler(None)
        run(m, hal, 500)
    assert m.pipeline.pulses.index == 25
    run(m, hal, 10_500)  # the index reaches flash within persist_interval_s, as in every state
    assert Store(Log(hal.ticks_ms, lambda line: None)).read("pulses") == {"index": 25}


def test_wrong_password_from_the_page_says_why_and_keeps_the_old_settings():
    m, hal, _ap = setup()
    before = read_config()
    assert m.submit("site-wifi", "short") == [
        "wifi_password: must be empty (open network) or 8 to 63 characters"]
    assert m.submit("site-wifi", "wrong-password-9") == []
    run(m, hal, 6_000, m.touch)
    assert m.wifi.result == (False, "site-wifi", "wrong password")
    assert read_config() == before and hal.resets == 0
    assert "could not join site-wifi (wrong password); the old settings are kept" in "\n".join(m.lines)


def test_settings_that_work_are_kept_and_setup_ends_with_a_reset_after_the_grace():
    m, hal, ap = setup()
    assert m.submit("site-wifi", "new-password-2") == []
    run(m, hal, 1_000, m.touch)
    assert m.leaving_ms is not None and read_config()["wifi_password"] == "new-password-2"
    assert m.submit("site-wifi", "anything-else") == ["new settings are already saved"]
    run(m, hal, 9_000, m.touch)
    assert hal.resets == 0  # the phone's page gets to show "Joined"
    with pytest.raises(SystemExit):
        run(m, hal, 2_000)
    assert hal.resets == 1 and ap.closed == 1


def test_the_configured_network_is_retried_only_while_nobody_uses_the_page():
    m, hal, _ap = setup(networks=(("meters", ("old-password-1", -60)),), setup_timeout_s=3600)
    hal.networks["meters"] = ("the-new-one", -60)  # the site changed it
    run(m, hal, 600_000, m.touch)  # a phone on the page for 10 min
    assert hal.joins == []
    run(m, hal, 130_000)  # then nobody: one retry after a quiet minute, at most 2 min apart
    assert hal.joins == ["meters"] and m.wifi_text() == "meters: wrong password"
    hal.networks["meters"] = ("old-password-1", -60)  # back as it was (a router restored)
    with pytest.raises(SystemExit):
        run(m, hal, 130_000)
    assert "the configured network meters is back" in "\n".join(m.lines)


def test_it_closes_after_setup_timeout_s_without_use():
    m, hal, ap = setup(networks=(), setup_timeout_s=120)
    run(m, hal, 100_000)
    m.touch()  # a page view restarts the count
    run(m, hal, 110_000)
    assert hal.resets == 0
    with pytest.raises(SystemExit):
        run(m, hal, 20_000)
    assert "closed after 2 min without use" in "\n".join(m.lines) and ap.closed == 1


def test_it_closes_after_an_hour_however_much_it_is_used():
    m, hal, _ap = setup(networks=(), setup_timeout_s=3600)
    opened_us = hal.clock.us
    with pytest.raises(SystemExit):
        run(m, hal, 3_700_000, m.touch)
    assert 3_600_000 <= (hal.clock.us - opened_us) / 1000 <= 3_601_000


def test_network_names_from_the_air_are_escaped_on_the_page():
    m, _hal, _ap = setup(networks=(("<script>alert(1)</script>", ("x" * 8, -50)),
                                   ('a" onmouseover="x', ("y" * 8, -60))))
    page = "".join(render_page(m))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'value="a&quot; onmouseover=&quot;x"' in page


def render_page(m):
    from firmware.setup_page import render
    return render(m, "tok")


def test_the_page_never_shows_a_secret():
    from firmware.setup_page import render
    m, hal, _ap = setup()
    os.makedirs("state", exist_ok=True)
    with open("state/creds.json", "w") as f:
        f.write("broken")  # garbled: shown as not provisioned, never a crash
    m.state = m._read_state()
    page = "".join(render(m, "tok"))
    for secret in ("old-password-1", BASE["provision_key"], BASE["provision_secret"],
                   BASE["supplier_key"], SETUP_PW, "new-password-2"):
        assert secret not in page
    assert m.submit("site-wifi", "wrong-password-9") == []
    run(m, hal, 6_000, m.touch)
    page = "".join(render(m, "tok"))
    assert "wrong-password-9" not in page and "Could not join site-wifi: wrong password." in page
    assert os.path.exists("config.json")
