"""Cross-check with upstream paho-mqtt 2.2.0 (installed by `make venv` into .venv/paho-upstream)."""
import json
import os
import subprocess
import sys

import pytest

from tbsim import Profile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PAHO_DIR = os.path.join(ROOT, ".venv", "paho-upstream")


def test_paho_upstream_against_tbsim(make_sim):
    assert os.path.isdir(os.path.join(PAHO_DIR, "paho")), "run `make venv` (installs upstream paho-mqtt)"
    sim = make_sim(profiles=[Profile("pk", "ps")], inactivity_timeout_s=2)
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "paho_check.py"), PAHO_DIR, str(sim.mqtt_port), "x"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = {}
    try:
        for raw in proc.stdout:
            msg = json.loads(raw)
            step = msg.get("step", "header")
            lines[step] = msg
            if step == "ready-for-rpc":
                assert sim.rpc("paho-device", "blink", {"n": 3}, timeout_s=5) == {"echo": {"method": "blink", "params": {"n": 3}}}
                sim.push_shared_attributes("paho-device", {"interval": 5})
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    # Which paho ran: the upstream one from its own directory, not tb-mqtt-client's fork.
    assert lines["header"]["paho_file"].startswith(PAHO_DIR) and lines["header"]["version"] == "2.2.0"
    assert lines["bad-token"]["rc"] == "Not authorized"
    assert lines["provision"]["qos"] == 1 and lines["provision"]["payload"]["status"] == "SUCCESS"
    assert lines["telemetry"]["published"] is True
    assert lines["rpc"]["topic"] == "v1/devices/me/rpc/request/0" and lines["rpc"]["qos"] == 1
    assert lines["shared"] == {"step": "shared", "topic": "v1/devices/me/attributes", "qos": 1, "payload": {"interval": 5}}
    assert lines["after-keepalive"]["published"] is True       # 3 s without data, PINGREQs count (inactivity 2 s)
    assert lines["v5"]["connect"] == "Success"
    assert lines["v5"]["reasons"] == ["Payload format invalid", "Success"]
    values = [e["values"] for e in sim.telemetry("paho-device")]
    assert values == [{"paho": 1}, {"after_ping": 1}, {"v5": 1}]
