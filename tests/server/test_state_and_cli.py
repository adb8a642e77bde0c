"""State file round trip, stop()/start() on the same ports, and the command line."""
import json
import os
import re
import signal
import subprocess
import sys
import time

from rawmqtt import RawClient, publish_packet

from tbsim import Profile, TBSim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY = re.compile(r"^tbsim listening mqtt=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)( mqtts=127\.0\.0\.1:(\d+))?"
                   r"( coap=127\.0\.0\.1:(\d+))?$")


def test_state_file_round_trip(tmp_path):
    path = str(tmp_path / "state.json")
    sim = TBSim(profiles=[Profile("k", "s")], state_file=path).start()
    try:
        sim.add_device("m", profile_key="k", token="tok-m")
        with RawClient(sim.mqtt_port) as c:
            c.connect("cid", "tok-m")
            c.send(publish_packet("v1/devices/me/telemetry", '{"ts":5,"values":{"a":1.5}}', qos=1))
            c.read_packet()
            c.send(publish_packet("v1/devices/me/attributes", '{"fw":"x"}', qos=1, packet_id=2))
            c.read_packet()
        sim.push_shared_attributes("m", {"interval": 10})
    finally:
        sim.stop()
    saved = json.load(open(path))
    assert saved["devices"][0]["name"] == "m"

    again = TBSim(state_file=path).start()
    try:
        d = again.device("m")
        assert d["credentials"] == "tok-m" and d["clientAttributes"] == {"fw": "x"}
        assert d["sharedAttributes"] == {"interval": 10} and d["profileKey"] == "k"
        assert again.telemetry("m") == [{"ts": 5, "values": {"a": 1.5}}]
        with RawClient(again.mqtt_port) as c:
            assert c.connect("cid", "tok-m") == (0x20, b"\x00\x00")
    finally:
        again.stop()


def test_stop_closes_everything_and_start_rebinds_same_ports(make_sim):
    sim = make_sim()
    sim.add_device("m", token="t")
    ports = (sim.mqtt_port, sim.http_port)
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", "t") == (0x20, b"\x00\x00")
    sim.stop()
    assert c.expect_closed()
    assert sim.events("close")[-1]["reason"] == "server-stop"
    sim.start()
    assert (sim.mqtt_port, sim.http_port) == ports
    with RawClient(sim.mqtt_port) as c2:
        assert c2.connect("cid", "t") == (0x20, b"\x00\x00")     # state kept
    c.close()


def start_cli(*args):
    proc = subprocess.Popen([sys.executable, "-m", "tbsim", "--mqtt-port", "0", "--http-port", "0",
                             "--coap-port", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().rstrip("\n")
    match = READY.match(line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match


def test_cli_ready_line_serves_and_sigterm_saves_state(tmp_path):
    state = str(tmp_path / "s.json")
    proc, match = start_cli("--profile", "pk:ps:check-pre-provisioned", "--device", "meter-9:tok-9:pk",
                            "--rate-limits", "free", "--state-file", state, "--log-level", "DEBUG")
    try:
        with RawClient(int(match.group(1))) as c:
            assert c.connect("cid", "tok-9") == (0x20, b"\x00\x00")
            c.send(publish_packet("v1/devices/me/telemetry", '{"a":1}', qos=1))
            assert c.read_packet() == (0x40, b"\x00\x01")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "tok-9" not in err                                  # tokens are never logged in full
    saved = json.load(open(state))
    assert saved["devices"][0]["telemetryCount"] == 1
    assert saved["profiles"][0]["strategy"] == "check-pre-provisioned"


def test_cli_tls_ready_line(pki):
    proc, match = start_cli("--mqtts-port", "0", "--cert", pki["cert"], "--key", pki["key"])
    try:
        assert match.group(4) and int(match.group(4)) > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_cli_help_lists_the_flags():
    out = subprocess.run([sys.executable, "-m", "tbsim", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    for flag in ("--mqtt-port", "--http-port", "--mqtts-port", "--cert", "--key", "--profile", "--device",
                 "--rate-limits", "--puback-on-validation-failure", "--state-file", "--provision-close-s",
                 "--inactivity-timeout-s", "--provision-subscribe", "--coap-port", "--provisioning",
                 "--provision-delay-s", "--telemetry-topic", "--attributes-topic", "--attributes-subscribe-topic"):
        assert flag in out.stdout


def test_cli_rejects_bad_profile():
    out = subprocess.run([sys.executable, "-m", "tbsim", "--profile", "only-key"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "KEY:SECRET" in out.stderr


def test_cli_reaches_the_refusing_provisioning_mode_the_inactivity_timeout_and_coap():
    import requests
    proc, match = start_cli("--profile", "pk:ps", "--provisioning", "success-then-refuse",
                            "--inactivity-timeout-s", "1", "--device", "quiet:tok-q")
    try:
        assert match.group(6) and int(match.group(6)) > 0              # CoAP is on
        http, mqtt = int(match.group(2)), int(match.group(1))
        reply = requests.post(f"http://127.0.0.1:{http}/api/v1/provision", timeout=10,
                              json={"provisionDeviceKey": "pk", "provisionDeviceSecret": "ps", "deviceName": "m"})
        assert reply.status_code == 200 and reply.json()["status"] == "SUCCESS"
        with RawClient(mqtt) as c:                                      # ...and the token is refused
            assert c.connect("cid", reply.json()["credentialsValue"]) == (0x20, b"\x00\x05")
        with RawClient(mqtt) as c:
            assert c.connect("cid", "tok-q") == (0x20, b"\x00\x00")
            t0 = time.monotonic()
            assert c.expect_closed(timeout=5)                            # idle for 1 s: closed
            assert 0.8 < time.monotonic() - t0 < 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_cli_rejects_a_topic_filter_that_is_not_a_pattern():
    out = subprocess.run([sys.executable, "-m", "tbsim", "--profile", "k:s", "--telemetry-topic", "a/(+"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not a valid pattern" in out.stderr
