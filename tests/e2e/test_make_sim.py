"""`make sim` (lab/sim.py), the README's first command: virtual meters metering a simulated
household against tbsim, a live view, and a summary that must agree with the pulses injected."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_make_sim_two_meters_household_profile_agree_and_report(tmp_path):
    report = tmp_path / "sim.json"
    # A household day compressed 2000 times (43 s), for 20 s; stdout is not a terminal, so the
    # live view prints one line per event instead of redrawing.
    r = subprocess.run([sys.executable, "-m", "lab.sim", "--meters", "2", "--duration", "20",
                        "--speedup", "2000", "--report", str(report)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert out.startswith("tbsim listening mqtt=127.0.0.1:")
    for uid in ("5e0000000001", "5e0000000002"):
        assert "%s | I state: attributes -> run" % uid in out, out[-3000:]
        assert "server | meter-%s client attributes stored:" % uid in out
    assert "provision request" in out and "-> SUCCESS" in out
    assert out.count("AGREE") == 2 and "DISAGREE" not in out
    data = json.loads(report.read_text())
    assert len(data["meters"]) == 2 and data["pulses_per_kwh"] == 10000
    for m in data["meters"]:
        assert m["agree"] and m["attributes"] and m["pulses_injected"] > 0
        assert m["server_energy_kwh"] == m["pulses_injected"] / 10000
    # Secrets are shown masked in the live view, never in full.
    assert "supplier-0001-secret" not in out and "sim-profile-secret" not in out
    assert "sim-wifi-pass" not in out and "sim-device-token-0001" not in out


def test_make_sim_constant_load_reports_the_true_power(tmp_path):
    report = tmp_path / "sim.json"
    r = subprocess.run([sys.executable, "-m", "lab.sim", "--meters", "1", "--load-w", "3600",
                        "--duration", "15", "--report", str(report)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    (m,) = json.loads(report.read_text())["meters"]
    # 3600 W at 10000 imp/kWh is 10 pulses a second; the power the meter reports is the load.
    assert m["agree"] and 100 <= m["pulses_injected"] <= 170
    assert abs(m["server_power_w_median"] - 3600) <= 36, m
