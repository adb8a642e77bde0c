"""MQTT over TLS with a CA the test makes, wrong-CA rejection, and the slow-server fault knobs."""
import os
import ssl
import subprocess
import sys
import time

import pytest
from cryptography import x509
from rawmqtt import RawClient

from lab.certs import make_test_pki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def client_context(cafile):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def tls_sim(make_sim, pki):
    return make_sim(mqtts_port=0, certfile=pki["cert"], keyfile=pki["key"])


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_tls_connect_with_test_ca(tls_sim, pki, hostname):
    tls_sim.add_device("m", token="t")
    with RawClient(tls_sim.mqtts_port, tls_context=client_context(pki["ca_pem"]), server_hostname=hostname) as c:
        assert c.connect("cid", "t") == (0x20, b"\x00\x00")
    assert tls_sim.events("connect")[-1]["tls"] is True
    with RawClient(tls_sim.mqtt_port) as c:                  # plain port still served
        assert c.connect("cid", "t") == (0x20, b"\x00\x00")


def test_wrong_ca_is_rejected_by_the_client(tls_sim, tmp_path):
    other = make_test_pki(str(tmp_path / "other"), ca_name="other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        RawClient(tls_sim.mqtts_port, tls_context=client_context(other["ca_pem"]))
    assert tls_sim.wait_for(lambda: any(e["reason"] == "tls-handshake-failed" for e in tls_sim.events("close")), 3)


def test_wrong_hostname_is_rejected(tls_sim, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        RawClient(tls_sim.mqtts_port, tls_context=client_context(pki["ca_pem"]), server_hostname="example.org")


def test_plain_mqtt_on_tls_port_is_dropped(tls_sim):
    with RawClient(tls_sim.mqtts_port) as c:
        c.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        assert c.expect_closed()


def test_tls_handshake_delay_knob(make_sim, pki):
    sim = make_sim(mqtts_port=0, certfile=pki["cert"], keyfile=pki["key"], tls_handshake_delay_s=0.5)
    t0 = time.monotonic()
    with RawClient(sim.mqtts_port, tls_context=client_context(pki["ca_pem"])) as c:
        assert time.monotonic() - t0 >= 0.45
        assert c.connect("provision") == (0x20, b"\x00\x00")


def test_connack_delay_knob(make_sim):
    sim = make_sim(connack_delay_s=0.4)
    with RawClient(sim.mqtt_port) as c:
        t0 = time.monotonic()
        assert c.connect("provision") == (0x20, b"\x00\x00")
        assert time.monotonic() - t0 >= 0.35


def test_pki_files_and_two_unrelated_cas(tmp_path):
    a = make_test_pki(str(tmp_path / "a"))
    b = make_test_pki(str(tmp_path / "b"))
    ca_a = x509.load_der_x509_certificate(open(a["ca_der"], "rb").read())
    ca_b = x509.load_pem_x509_certificate(open(b["ca_pem"], "rb").read())
    server_a = x509.load_pem_x509_certificate(open(a["cert"], "rb").read())
    assert ca_a.public_key().public_numbers() != ca_b.public_key().public_numbers()
    server_a.verify_directly_issued_by(ca_a)
    with pytest.raises(Exception):
        server_a.verify_directly_issued_by(ca_b)
    san = server_a.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert oct(os.stat(a["key"]).st_mode & 0o777) == "0o600"


def test_certs_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lab.certs", str(tmp_path / "c")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ca_der=" in out.stdout and os.path.exists(tmp_path / "c" / "ca.der")
