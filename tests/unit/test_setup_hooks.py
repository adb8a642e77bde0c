"""When the supervisor hands over to setup mode (firmware/setup_request.py): Wi-Fi
failing for setup_after_s, the BOOT button held 10 s; never while reporting, never without a
setup password; and the BOOT button's shorter press, which re-provisions instead."""

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"
SETUP_PW = "abcd-efgh-jkmn-pqrs"


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class _NullLog:
    def warn(self, *a):
        pass


def request():
    return Store(_NullLog()).read("setup_request")


def reporting(**over):
    b = FakeBroker()
    b.provision_script = [{"credentialsValue": "tok-1", "credentialsType": "ACCESS_TOKEN",
                           "status": "SUCCESS"}]
    b.tokens["tok-1"] = NAME
    rig = Rig(b, setup_password=SETUP_PW, **over)
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN)
    return rig


def seconds(rig, since_us):
    return (rig.hal.clock.us - since_us) / 1e6


def test_wifi_failing_for_setup_after_s_resets_into_setup_mode():
    rig = reporting(setup_after_s=300)
    rig.pulse(5)
    rig.hal.wifi_up = False  # the site changed its password: every join fails from now on
    t0 = rig.hal.clock.us
    with pytest.raises(SystemExit):
        rig.run(3_600_000)
    # The first failed join 30 s after Wi-Fi was lost; setup once a failure comes 300 s or more
    # after the first join: never earlier, and at most one join and one backoff later.
    assert 300 <= seconds(rig, t0) <= 300 + 30 + 60 + 5
    assert rig.hal.resets == 1
    assert request() == {"why": "could not join meters for 300 s: access point not found"}
    assert "resetting into setup mode" in rig.text()
    assert Store(_NullLog()).read("pulses") == {"index": 5}  # saved before the reset
    assert rig.text().count("could not join meters") >= 3  # it kept retrying in between


def test_wifi_back_in_between_starts_the_count_again():
    rig = reporting(setup_after_s=300)
    for _ in range(3):
        rig.hal.wifi_up = False
        rig.run(200_000)
        rig.hal.wifi_up = True
        assert rig.run(120_000, lambda: rig.meter.state == M.RUN)
    assert rig.hal.resets == 0 and request() is None


def test_setup_after_s_0_never_opens_it_by_itself():
    rig = reporting(setup_after_s=0)
    rig.hal.wifi_up = False
    rig.run(3_600_000)
    assert rig.hal.resets == 0 and request() is None


def test_without_a_setup_password_it_is_refused_and_the_meter_keeps_trying():
    b = FakeBroker()
    rig = Rig(b, setup_after_s=60)
    rig.hal.wifi_up = False
    rig.run(1_000_000)
    assert rig.hal.resets == 0 and request() is None
    assert "setup mode not opened" in rig.text() and "no setup_password" in rig.text()
    assert rig.text().count("setup mode not opened") <= 1_000 // 60 + 1  # once per setup_after_s


def hold(rig, ms):
    rig.hal.button = True
    rig.run(ms)
    rig.hal.button = False


def test_boot_button_held_10_s_opens_setup_when_the_meter_is_not_reporting():
    rig = reporting()
    rig.hal.wifi_up = False
    rig.run(40_000, lambda: rig.meter.state == M.WIFI)
    assert rig.meter.state == M.WIFI
    rig.hal.button = True
    t0 = rig.hal.clock.us
    with pytest.raises(SystemExit):
        rig.run(20_000)
    assert 10 <= seconds(rig, t0) < 10.2
    assert request() == {"why": "BOOT button held 10 s"}
    assert "re-provisioning requested" not in rig.text()  # never both


def test_never_while_connected_and_reporting():
    rig = reporting()
    hold(rig, 15_000)
    assert rig.hal.resets == 0 and request() is None
    assert "setup mode not opened (BOOT button held 10 s): the meter is connected and reporting" \
        in rig.text()
    assert "re-provisioning requested" not in rig.text()  # the press counted for setup only
    assert rig.meter.state == M.RUN
    assert rig.meter._led.name == "run"  # the 3 s flicker undone


def test_a_3_s_press_re_provisions_on_release_and_a_short_one_does_nothing():
    rig = reporting()
    hold(rig, 2_000)
    rig.run(1_000)
    assert "re-provisioning requested" not in rig.text()
    hold(rig, 3_500)
    assert rig.meter._led.name == "gesture"  # from the 3 s mark: "let go now"
    assert "re-provisioning requested" not in rig.text()  # not before the release
    rig.run(100)
    assert "re-provisioning requested (BOOT button)" in rig.text()
    assert rig.hal.resets == 0 and request() is None


def test_a_button_stuck_down_fires_once():
    rig = reporting()
    hold(rig, 120_000)
    assert rig.text().count("setup mode not opened") == 1
    assert "re-provisioning requested" not in rig.text()


def test_a_press_under_way_at_boot_is_timed_from_the_first_step():
    # Held while the meter boots (after the ROM loader's strapping check): 10 s from the start.
    b = FakeBroker()
    b.down = True  # no server: the meter is not reporting
    rig = Rig(b, setup_password=SETUP_PW, start=False)
    rig.hal.button = True
    rig.power_up()
    with pytest.raises(SystemExit):
        rig.run(20_000)
    assert request() == {"why": "BOOT button held 10 s"}
