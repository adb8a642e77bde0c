"""Test PKI for the project's TLS tests: a throw-away CA and one server certificate.

Every test run makes its own keys (nothing secret is committed). Calling make_test_pki twice gives two
unrelated CAs, which is what wrong-CA tests need. MicroPython's ssl only takes the CA in DER form
(docs/unix-port.md §8), so both encodings are written.

    python -m lab.certs DIR [HOSTNAME ...]
"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_DAYS = 30


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hostnames):
    entries = []
    for host in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def make_test_pki(directory, hostnames=("localhost", "127.0.0.1"), ca_name="meter-test-ca"):
    """Write ca.pem, ca.der, server.pem and server.key into directory; return their paths.

    The CA is EC P-256 with basicConstraints CA:true; the server certificate carries the hostnames as
    subjectAltNames (IP entries for addresses) and serverAuth usage, signed by that CA.
    """
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    # Back-date by a minute so a client whose clock is a little behind still accepts the certificate.
    not_before = now - datetime.timedelta(minutes=1)
    not_after = now + datetime.timedelta(days=_VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0] if hostnames else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hostnames), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca_pem": os.path.join(directory, "ca.pem"),
        "ca_der": os.path.join(directory, "ca.der"),
        "cert": os.path.join(directory, "server.pem"),
        "key": os.path.join(directory, "server.key"),
    }
    with open(paths["ca_pem"], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["ca_der"], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.DER))
    with open(paths["cert"], "wb") as f:
        f.write(server_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    # The key is test-only, but keep it private to the user anyway.
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return paths


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m lab.certs DIR [HOSTNAME ...]")
        return 0 if argv else 2
    hostnames = tuple(argv[1:]) or ("localhost", "127.0.0.1")
    for key, path in make_test_pki(argv[0], hostnames).items():
        print(f"{key}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
