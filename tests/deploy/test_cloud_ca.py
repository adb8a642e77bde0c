"""The ThingsBoard Cloud CA bundle (tools/cloud_ca.py): built from Debian's ca-certificates or
the pinned certifi, checked, split by the firmware's own DER reader, loaded by the MicroPython
Unix port's ssl exactly as the meter loads it; a substituted root fails the build."""

import datetime
import hashlib
import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy_support import PY, ROOT, run
from tools import cloud_ca
from lab.certs import make_test_pki

from firmware.startup import der_certificates

MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
HAS_DEBIAN = bool(cloud_ca.debian_certificates())

# Runs on the Unix port: the firmware's DER reader, then one load_verify_locations per
# certificate, as firmware/startup.py does at boot.
_LOAD = """
import sys, ssl
from firmware.startup import der_certificates
certs = der_certificates(open(sys.argv[1], "rb").read())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
for c in certs:
    ctx.load_verify_locations(cadata=c)
print("LOADED", len(certs), [len(c) for c in certs])
"""


def names_and_fingerprints(bundle):
    out = []
    for der in der_certificates(bundle):
        cert = x509.load_der_x509_certificate(der)
        out.append((cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                    hashlib.sha256(der).hexdigest()))
    return out


@pytest.fixture(params=["debian", "certifi"])
def bundle(request, tmp_path):
    if request.param == "debian" and not HAS_DEBIAN:
        pytest.skip("Debian's ca-certificates is not installed (apt-get install ca-certificates)")
    out = str(tmp_path / "thingsboard-cloud.der")
    chosen = cloud_ca.build(out, source=request.param, log=lambda s: None)
    assert [n for n, _fp, _w in chosen] == ["ISRG Root X1", "ISRG Root X2"]
    return out


def test_the_bundle_holds_isrg_root_x1_and_x2_as_der(bundle):
    data = open(bundle, "rb").read()
    assert names_and_fingerprints(data) == [(n, cloud_ca.PINNED[n]) for n in cloud_ca.DEFAULT_ROOTS]
    assert not data.lstrip().startswith(b"-----BEGIN")
    txt = open(bundle[:-4] + ".txt").read()
    assert "96:BC:EC:06" in txt and "69:72:9B:8E" in txt


def test_the_micropython_ssl_loads_every_certificate_of_the_bundle(bundle, tmp_path):
    script = tmp_path / "load_ca.py"
    script.write_text(_LOAD)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=110K", str(script), bundle],
                       env=dict(os.environ, MICROPYPATH=ROOT + ":.frozen"), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED 2" in r.stdout


def test_both_sources_give_the_same_bytes(tmp_path):
    if not HAS_DEBIAN:
        pytest.skip("Debian's ca-certificates is not installed")
    a, b = str(tmp_path / "a.der"), str(tmp_path / "b.der")
    cloud_ca.build(a, source="debian", log=lambda s: None)
    cloud_ca.build(b, source="certifi", log=lambda s: None)
    assert open(a, "rb").read() == open(b, "rb").read()


def test_the_command_line_prints_the_fingerprints(tmp_path):
    out = str(tmp_path / "ca.der")
    r = run([PY, os.path.join(ROOT, "tools", "cloud_ca.py"), "--out", out])
    assert r.returncode == 0, r.stderr
    assert "ISRG Root X1  SHA-256 96:BC:EC:06:26:49:76:F3" in r.stdout
    assert "ISRG Root X2  SHA-256 69:72:9B:8E:15:A8:6E:FC" in r.stdout
    r = run([PY, os.path.join(ROOT, "tools", "cloud_ca.py"), "--out", out, "--root", "No Such CA"])
    assert r.returncode == 1 and "No Such CA: not in" in r.stderr


def _self_signed_ca(common_name, ca=True):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, cloud_ca.ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def test_a_substituted_root_fails_the_build(tmp_path):
    # A store where someone put their own "ISRG Root X1": right name, right shape, wrong key.
    store = tmp_path / "mozilla"
    store.mkdir()
    fake = _self_signed_ca("ISRG Root X1")
    (store / "ISRG_Root_X1.crt").write_bytes(fake.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(cloud_ca.CAError, match="is not the published"):
        cloud_ca.build(str(tmp_path / "x.der"), roots=("ISRG Root X1",), source="debian",
                       debian_dir=str(store), log=lambda s: None)
    assert not (tmp_path / "x.der").exists()


def test_only_self_signed_ca_roots_pass(tmp_path):
    pki = make_test_pki(str(tmp_path / "pki"))
    ca = x509.load_pem_x509_certificate(open(pki["ca_pem"], "rb").read())
    server = x509.load_pem_x509_certificate(open(pki["cert"], "rb").read())
    der, fp = cloud_ca.check_root(ca, "meter-test-ca")  # not pinned: checked, fingerprint shown
    assert fp == hashlib.sha256(der).hexdigest()
    with pytest.raises(cloud_ca.CAError, match="subject"):
        cloud_ca.check_root(server, "meter-test-ca")
    with pytest.raises(cloud_ca.CAError, match="not a CA"):
        cloud_ca.check_root(_self_signed_ca("leaf", ca=False), "leaf")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    with pytest.raises(cloud_ca.CAError, match="not valid now"):
        cloud_ca.check_root(_self_signed_ca("old"), "old", now=later)


def test_an_empty_store_is_reported_by_package_name(tmp_path):
    with pytest.raises(cloud_ca.CAError, match="apt-get install ca-certificates"):
        cloud_ca.source_certificates("debian", str(tmp_path))
