"""TLS: the meter verifies the server's certificate chain and host name (mbedTLS, DER CA)."""

import pathlib
import time

import pytest

from e2e_support import KEY, SECRET, base_config, device_name
from lab.certs import make_test_pki
from tbsim import Profile, TBSim


@pytest.fixture
def tls_sim(tmp_path):
    pki = make_test_pki(str(tmp_path / "pki"), hostnames=("localhost",))
    s = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=0, certfile=pki["cert"],
              keyfile=pki["key"], provision_close_s=5.0)
    s.start()
    yield s, pki
    s.stop()


def tls_config(sim, **over):
    return base_config(sim, tb_host="localhost", tb_port=sim.mqtts_port, tb_tls=True,
                       tb_plain_ok=None, **over)


def test_with_the_servers_ca_the_meter_provisions_and_runs_over_tls(tls_sim, meters):
    sim, pki = tls_sim
    ca = pathlib.Path(pki["ca_der"]).read_bytes()
    m = meters(tls_config(sim), files={"ca.der": ca})
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    connects = [e for e in sim.events("connect") if e["returnCode"] == 0]
    assert connects and all(e["tls"] for e in connects)
    assert "TLS to localhost" in m.text() and "PLAIN" not in m.text()
    assert sim.device(device_name())["clientAttributes"]


def test_a_wrong_ca_is_refused_and_nothing_is_sent(tls_sim, meters, tmp_path):
    sim, _pki = tls_sim
    other = make_test_pki(str(tmp_path / "other"), ca_name="some-other-ca")
    m = meters(tls_config(sim), files={"ca.der": pathlib.Path(other["ca_der"]).read_bytes()})
    m.power_on()
    assert m.wait_for(r"TLS: The certificate is not correctly signed by the trusted CA", 20), m.text()
    time.sleep(2)
    assert sim.events("connect") == [] and sim.events("provision") == []
    assert m.state != "run"


def test_a_wrong_host_name_is_refused(tls_sim, meters, tmp_path):
    sim, _ = tls_sim
    other = make_test_pki(str(tmp_path / "named"), hostnames=("meters.example.org",))
    s2 = TBSim(profiles=[Profile(KEY, SECRET)], mqtts_port=0, certfile=other["cert"],
               keyfile=other["key"])
    s2.start()
    try:
        m = meters(tls_config(s2), files={"ca.der": pathlib.Path(other["ca_der"]).read_bytes()})
        m.power_on()  # right CA, but the certificate is for another name than "localhost"
        assert m.wait_for(r"TLS: The certificate Common Name \(CN\) does not match", 20), m.text()
        time.sleep(2)
        assert s2.events("connect") == []
    finally:
        s2.stop()


def test_missing_ca_file_is_a_config_error(tls_sim, meters):
    sim, _ = tls_sim
    m = meters(tls_config(sim))
    m.power_on()
    assert m.wait_for("tb_ca: file ca.der not found on flash", 10)
    assert m.wait_for("meter halted", 5)
