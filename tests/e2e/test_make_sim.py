"""`make sim` (lab/sim.py), the README's first command: virtual meters metering a simulated
household against tbsim, a live view (line by line off a terminal), a summary that must agree
with the pulses injected, and a chart per meter beside the report."""

import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAMP = re.compile(r"^ +\d+\.\ds(?: day \d+)? \d\d:\d\d (.*)$")


def readme_sim_sample():
    """The lines of README.md's sample of `make sim` off a terminal (the block that shows the
    provision request), each without its time stamp."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for m in re.finditer(r"^```\w*\n(.*?)^```", text, re.S | re.M):
        if "server | provision request" in m.group(1):
            lines = m.group(1).splitlines()
            assert lines and all(STAMP.match(l) for l in lines), lines
            return [STAMP.match(l).group(1) for l in lines]
    raise AssertionError("README.md has no make sim sample")


def run_sim(args, timeout=120):
    """lab.sim with stdout a pipe, each line read as it comes: [(seconds since start, line)]."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "lab.sim"] + args, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines = []
    try:
        for line in p.stdout:
            lines.append((time.time() - t0, line.rstrip("\n")))
        rc = p.wait(timeout)
    finally:
        p.kill()
    return rc, lines, p.stderr.read()


def test_make_sim_two_meters_household_profile_agree_and_report(tmp_path):
    report = tmp_path / "sim.json"
    # A household day compressed 2000 times (43 s), for 20 s; stdout is not a terminal, so the
    # live view prints one line per event, as it happens, instead of redrawing.
    rc, timed, err = run_sim(["--meters", "2", "--duration", "20", "--speedup", "2000",
                              "--report", str(report)])
    out = "\n".join(l for _t, l in timed)
    assert rc == 0, out[-3000:] + err[-2000:]
    assert out.startswith("tbsim listening mqtt=127.0.0.1:")
    assert "\nlegend:\n  played " in out and "\n  on flash " in out and "\n  at server " in out
    for uid in ("5e0000000001", "5e0000000002"):
        assert "meter-%s | I state: attributes -> run" % uid in out, out[-3000:]
        assert "server | meter-%s client attributes stored:" % uid in out
    assert "provision request" in out and "-> SUCCESS" in out
    # Every reading that reaches the server is a line: energy, power, index beside the true load.
    readings = [l for _t, l in timed if " reading: " in l]
    rx = re.compile(r"^ +\d+\.\ds (day \d )?\d\d:\d\d server \| meter-5e000000000[12] reading: "
                    r"[\d.]+ kWh, [\d.]+ W, index \d+ \(as on flash\) \| true load \d+ W, "
                    r"played \d+$")
    assert readings and all(rx.match(l) for l in readings), readings[:5]
    data = json.loads(report.read_text())
    for m in data["meters"]:
        shown = [l for l in readings if m["meter"] + " reading:" in l]
        # one line per reading, 20 s at one reading every 5 s plus the last ones
        assert 4 <= len(shown) <= m["telemetry_messages"], (len(shown), m)
        # the last one, after the loads stopped and the meter saved its index: all of it
        assert "index %d (as on flash)" % m["pulses_injected"] in shown[-1], shown[-3:]
    # ... printed while the run goes on, not all at the end: the boot was on stdout well before
    # the summary (20 s of loads after it).
    booted = [t for t, l in timed if "I state: attributes -> run" in l]
    summary_at = [t for t, l in timed if l == "summary:"][0]
    assert booted and summary_at - max(booted) >= 15, (booted, summary_at)
    first = [t for t, l in timed if " reading: " in l][0]
    assert summary_at - first >= 10
    # The simulated clock: 20 s at 2000x runs past 06:00 by ~11 h.
    assert re.search(r"^ +1\d\.\ds 1\d:\d\d ", "\n".join(readings), re.M)
    assert out.count("AGREE") == 2 and "DISAGREE" not in out
    assert len(data["meters"]) == 2 and data["pulses_per_kwh"] == 10000 and data["speedup"] == 2000
    for m in data["meters"]:
        assert m["agree"] and m["attributes"] and m["pulses_injected"] > 0
        assert m["server_energy_kwh"] == m["pulses_injected"] / 10000
        # A chart per meter, beside the report.
        chart = tmp_path / m["chart"]
        assert m["chart"] == "sim-%s.png" % m["meter"]
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20000
    assert "charts: %s" % (tmp_path / "sim-meter-5e0000000001.png") in out
    # Secrets are shown masked in the live view, never in full.
    assert "supplier-0001-secret" not in out and "sim-profile-secret" not in out
    assert "sim-wifi-pass" not in out and "sim-device-token-0001" not in out
    # README.md's sample of this output is what a run prints: each of its lines is one of this
    # run's (after the time stamp; a reading's figures are this run's own).
    printed = [STAMP.match(l).group(1) for _t, l in timed if STAMP.match(l)]
    for line in readme_sim_sample():
        if " reading: " in line:
            head = re.escape(line.split(" reading: ")[0] + " reading: ")
            rx = re.compile(head + r"[\d.]+ kWh, [\d.]+ W, index \d+ \(as on flash\) \| "
                            r"true load \d+ W, played \d+$")
            assert any(rx.match(l) for l in printed), line
        else:
            assert line in printed, (line, [l for l in printed if "5e0000000001" in l][:12])


def test_make_sim_constant_load_reports_the_true_power(tmp_path):
    report = tmp_path / "sim.json"
    rc, timed, err = run_sim(["--meters", "1", "--load-w", "360", "--duration", "15",
                              "--report", str(report)])
    out = "\n".join(l for _t, l in timed)
    assert rc == 0, out[-3000:] + err[-2000:]
    (m,) = json.loads(report.read_text())["meters"]
    # No day to simulate: the lines carry the seconds only, and the chart counts seconds.
    readings = [l for _t, l in timed if " reading: " in l]
    assert readings and all(re.match(r"^ +\d+\.\ds server \| ", l) for l in readings), readings
    assert any("true load 360 W" in l for l in readings) and "true load 0 W" in readings[-1]
    assert (tmp_path / m["chart"]).exists()
    # 360 W at 10000 imp/kWh is a pulse a second; the power the meter reports is the load. A
    # reading's power is one pulse's energy over the gap between two edges as the firmware
    # timestamped them, so the host's scheduling of the pulse feeder moves it: on a loaded
    # 2-core machine an edge arrives a few ms late, 1.6 % of the 100 ms gap a 3600 W load gives
    # (seen beside a CPU hog), 0.2 % of this 1 s gap. Within 1 % of the load, then, survives up
    # to 10 ms of lateness; the formula itself is checked exactly with a fake clock
    # (tests/portable/test_pulses.py).
    assert m["agree"] and 10 <= m["pulses_injected"] <= 17
    assert abs(m["server_power_w_median"] - 360) <= 3.6, m


def test_make_sim_ota_rolls_out_a_new_version(tmp_path):
    # make sim OTA=1: a package of the meters' tree stamped "<version>+ota", built as make
    # ota-package builds one, uploaded and assigned once the meter runs; it downloads, switches,
    # proves itself and reports the new version. The download takes about 35 s (107 KB at
    # 512 bytes per chunk, paced, readings first): 75 s of run leave room on a loaded machine.
    report = tmp_path / "sim.json"
    rc, timed, err = run_sim(["--meters", "1", "--load-w", "360", "--duration", "75", "--ota",
                              "--report", str(report)], timeout=180)
    out = "\n".join(l for _t, l in timed)
    assert rc == 0, out[-3000:] + err[-2000:]
    ver = re.search(r"ota \| package meter-firmware (\S+): \d+ bytes, SHA256 [0-9a-f]+", out).group(1)
    assert ver.endswith("+ota")
    v = re.escape(ver)
    story = [r"server \| OTA package meter-firmware %s uploaded and assigned" % v,
             r"meter-5e0000000001 \| I ota: downloading firmware %s \(\d+ bytes, SHA256\)" % v,
             r"server \| meter-5e0000000001 fw_state DOWNLOADING",
             r"meter-5e0000000001 \| I ota: firmware %s verified; restarting to apply it" % v,
             r"meter-5e0000000001 \| bootslot: firmware %s unpacked into slot 1" % v,
             r"meter-5e0000000001 \| I main: meter firmware starting on unix: meter-firmware %s$" % v,
             r"meter-5e0000000001 \| I remote: firmware %s confirmed" % v,
             r"server \| meter-5e0000000001 fw_state UPDATED",
             r"ota \| rollout done: all 1 meter\(s\) report firmware %s, \d+ s after" % v]
    at = 0
    for rx in story:  # in this order
        hits = [i for i, (_t, l) in enumerate(timed) if i >= at and re.search(rx, l)]
        assert hits, (rx, out[-3000:])
        at = hits[0]
    assert "  OTA %s: 1 of 1 meter(s) report it" % ver in out
    (m,) = json.loads(report.read_text())["meters"]
    assert m["firmware"] == ver and m["updated"] and m["agree"], m
