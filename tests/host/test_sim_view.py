"""make sim's live view (lab/sim.py) on a fake server and fake meters: line-by-line output off
a terminal, in the order things happened; the simulated clock; the boot and provisioning story
that stays on screen however many events follow."""

import io
import os
import re
import time

from firmware.provision import build_request
from lab import sim as labsim
from tbsim import Profile, TBSim
from tbsim.provisioning import parse_request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAMP = re.compile(r"^ +\d+\.\ds(?: day \d+)? \d\d:\d\d (.*)$")


class FakeSim:
    def __init__(self):
        self.evts, self.devices, self.series = [], {}, {}

    def events(self, since=0):
        return self.evts[since:]

    def device(self, name):
        return self.devices.get(name)

    def telemetry(self, name):
        return list(self.series.get(name, []))

    def publish(self, name, t, **values):
        self.series.setdefault(name, []).append({"ts": int(t * 1000), "values": values})
        dev = self.devices.setdefault(name, {"telemetryCount": 0, "latestTelemetry": {}})
        dev["telemetryCount"] += 1
        dev["latestTelemetry"] = dict(values)


class FakeMeter:
    def __init__(self, uid):
        self.uid, self.state, self.pulses_delivered, self.powered = uid, "run", 0, True


class FakeTrain:
    def is_alive(self):
        return True


def view(speedup=288.0, tty=False, t0=None):
    out = io.StringIO()
    v = labsim.LiveView(FakeSim(), labsim.Clock(speedup, t0), tty, out)
    v.tracks.append(labsim.Track(FakeMeter("5e0000000001"), FakeTrain(), lambda t: 1500.0))
    return v, out


def test_the_clock_shows_the_simulated_time_of_day_only_for_a_household_day():
    clock = labsim.Clock(288.0, t0=1000.0)
    assert clock.time_of_day(1000.0) == "06:00"
    assert clock.time_of_day(1000.0 + 62.5) == "11:00"  # 62.5 s x 288 = 5 h
    assert clock.time_of_day(1000.0 + 300.0) == "day 2 06:00"
    assert clock.stamp(1012.5) == "   12.5s 07:00"
    assert labsim.Clock(None, t0=1000.0).stamp(1012.5) == "   12.5s"


def test_off_a_terminal_every_event_is_one_line_in_the_order_it_happened():
    v, out = view(t0=time.time() - 10)
    meter = v.tracks[0].meter
    v.start()
    assert out.getvalue().startswith("legend:\n  played ")
    assert "simulated time of day (a day every 300 s)" in out.getvalue()
    out.truncate(0), out.seek(0)
    # The meter's console lines arrive at once, the server's events at the next poll: a server
    # event that happened between two console lines is printed between them.
    v.on_console(meter, "1.000 I state: time -> provision")
    time.sleep(0.02)
    v.sim.evts.append({"t": time.time(), "kind": "provision", "status": "SUCCESS",
                       "request": {"deviceName": "meter-5e0000000001",  # as tbsim records it
                                   "provisionDeviceKey": "si...ey",
                                   "provisionDeviceSecret": "si...et", "token": ""}})
    time.sleep(0.02)
    v.on_console(meter, "1.100 I provision: SUCCESS: token credentials stored")
    time.sleep(0.02)
    v.sim.evts.append({"t": time.time(), "kind": "attributes", "device": "meter-5e0000000001",
                       "values": {"Power_suppier_secret_key": "supplier-0001-secret",
                                  "CUPs": "ES0031000000000001BJ0F"}})
    meter.pulses_delivered = 42
    v.sim.publish("meter-5e0000000001", time.time(), energy_kwh=0.004, power_w=1498.2, pulses=40)
    v.sim.publish("meter-5e0000000001", time.time(), rssi=-60)  # health: not a reading
    assert out.getvalue() == ""  # nothing before the poll...
    v.poll_server()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert lines[0].endswith("meter-5e0000000001 | I state: time -> provision")
    assert "server | provision request deviceName=meter-5e0000000001" in lines[1]
    # The masked values as the server recorded them, not masked again into "..."; the empty
    # token left out.
    assert lines[1].endswith("server | provision request deviceName=meter-5e0000000001 "
                             "provisionDeviceKey=si...ey provisionDeviceSecret=si...et -> SUCCESS")
    assert lines[2].endswith("| I provision: SUCCESS: token credentials stored")
    assert "client attributes stored" in lines[3] and "supplier-0001-secret" not in lines[3]
    assert lines[4].endswith("server | meter-5e0000000001 reading: 0.004 kWh, 1498.2 W, index 40 "
                             "(as on flash) | true load 1500 W, played 42")
    assert all(l.startswith("   10.") or l.startswith("    9.") for l in lines), lines
    assert " 06:4" in lines[4]  # 10 s at 288x after 06:00
    out.truncate(0), out.seek(0)
    v.poll_server()  # nothing new: nothing printed twice
    assert out.getvalue() == ""


def test_on_a_terminal_nothing_is_printed_line_by_line_and_the_boot_story_stays():
    v, out = view(tty=True)
    meter, track = v.tracks[0].meter, v.tracks[0]
    track.meter_on = time.time() - 1
    for s in ("boot -> wifi", "wifi -> time", "time -> provision", "provision -> connect",
              "connect -> attributes", "attributes -> run"):
        v.on_console(meter, "0.100 I state: " + s)
    v.on_console(meter, "0.200 I provision: SUCCESS: token credentials stored")
    v.sim.evts.append({"t": time.time(), "kind": "attributes", "device": track.name,
                       "values": {"CUPs": "ES0031000000000001BJ0F"}})
    v.poll_server()
    for i in range(300):  # far more events than the screen holds
        v.note("server | event %d" % i)
    v.flush()
    assert out.getvalue() == ""
    track.flash_index = 37
    screen = v.screen((100, 40))
    assert len(screen) <= 39 and all(len(l) <= 100 for l in screen)
    text = "\n".join(screen)
    assert "boot -> wifi -> time -> provision -> connect -> attributes -> run" in text
    assert "provisioning: SUCCESS: token credentials stored" in text
    assert 'attributes at the server: {"CUPs": "ES0031000000000001BJ0F"}' in text
    assert "server | event 299" in text and "server | event 0\n" not in text
    head = [l for l in screen if l.startswith("meter  ")][0].split()
    assert head[:4] == ["meter", "state", "played", "on"]  # played, on flash, at server
    row = [l for l in screen if l.startswith("meter-5e")][0].split()
    assert row[2:4] == ["0", "37"]
    assert "on flash   the pulse index the meter saved last" in text  # the legend


def test_a_small_terminal_shows_whole_meters_and_says_how_many_are_left_out():
    v, _out = view(tty=True)
    for i in range(2, 30):
        v.tracks.append(labsim.Track(FakeMeter("5e%010d" % i), FakeTrain(), lambda t: 0.0))
    screen = v.screen((120, 60))
    assert len(screen) <= 59
    more = [l for l in screen if "more meter(s)" in l]
    assert len(more) == 1
    shown = sum(1 for l in screen if "powered on" in l)
    assert int(more[0].split()[2]) == 29 - shown


def test_chart_path_is_beside_the_report():
    assert labsim.chart_path("run/sim/sim.json", "5e01") == "run/sim/sim-meter-5e01.png"
    assert labsim.chart_path("out", "5e01") == "out-meter-5e01.png"


def readme_sim_sample():
    """The lines of README.md's sample of `make sim` off a terminal (the block that shows the
    provision request), each without its time stamp."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for m in re.finditer(r"^```\w*\n(.*?)^```", text, re.S | re.M):
        if "server | provision request" in m.group(1):
            lines = m.group(1).splitlines()
            assert all(STAMP.match(l) for l in lines), lines
            return [STAMP.match(l).group(1) for l in lines]
    raise AssertionError("README.md has no make sim sample")


def test_the_readme_sample_provision_line_is_what_make_sim_prints():
    # The real parts of that line: the first virtual meter's config (lab/sim.py), its request
    # as the firmware builds it, tbsim parsing, deciding and recording it, the live view
    # printing tbsim's event. tests/e2e/test_make_sim.py checks the whole sample against a
    # real run.
    uid, cfg = labsim.meter_config(0, 1883)
    sim = TBSim(profiles=[Profile(labsim.KEY, labsim.SECRET)])
    req = build_request(cfg["provision_key"], cfg["provision_secret"], "meter-" + uid,
                        cfg["access_token"])
    assert sim._provision(parse_request(req), "mqtt")[0] == "SUCCESS"
    out = io.StringIO()
    labsim.LiveView(sim, labsim.Clock(288.0), False, out).poll_server()
    printed = [STAMP.match(l).group(1) for l in out.getvalue().splitlines()]
    assert printed == [l for l in readme_sim_sample() if "server | provision request" in l]
    # Every secret masked once, with the firmware's rule: its first and last two characters.
    assert "provisionDeviceKey=si...ey provisionDeviceSecret=si...et token=si...01" in printed[0]
