"""The CA bundle a meter trusts for ThingsBoard Cloud, built from a trusted source at build time.

    python tools/cloud_ca.py [--out build/ca/thingsboard-cloud.der] [--source auto|debian|certifi]
                             [--root "ISRG Root X1" --root ...]
    make ca          (make build and make deploy make it too)

The meter's ssl (mbedTLS on MicroPython) takes DER certificates only, and firmware/startup.py
loads every certificate of a file of concatenated DER (der_certificates), so the bundle is
just the roots, one after the other. Which root mqtt.thingsboard.cloud chains to is not
confirmed in our notes; ThingsBoard's examples use Let's Encrypt, whose roots are ISRG Root X1
(RSA) and ISRG Root X2 (ECDSA), so both go in. docs/deploy.md says how to check the server's
chain and how to give a meter another CA.

Nothing is pasted into the repository. The certificates come from Debian's ca-certificates
package (apt-get install ca-certificates), or, when it is not installed, from the certifi
package pinned in requirements.txt (Mozilla's list, as Debian's is). Each one must be a
self-signed CA certificate with the subject asked for, valid today, whose signature verifies
with its own key; for the two ISRG roots the SHA-256 fingerprint must also be the one Let's
Encrypt publishes, so a tampered or substituted source fails the build. The fingerprints are
printed, and written next to the bundle (.txt), for the technician to compare.
"""

import argparse
import datetime
import glob
import hashlib
import os
import sys
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "ca", "thingsboard-cloud.der")
DEBIAN_DIR = "/usr/share/ca-certificates/mozilla"  # where the ca-certificates package puts them
ORG = "Internet Security Research Group"
DEFAULT_ROOTS = ("ISRG Root X1", "ISRG Root X2")
# SHA-256 of each root as Let's Encrypt publishes it (letsencrypt.org, "Chains of Trust"):
# a second, independent statement of what the certificate must be.
PINNED = {
    "ISRG Root X1": "96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6",
    "ISRG Root X2": "69729b8e15a86efc177a57afb7171dfc64add28c2fca8cf1507e34453ccb1470",
}


class CAError(Exception):
    pass


def _cn(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _pem_blocks(text):
    """Every PEM certificate in a text (one .crt, or certifi's whole bundle)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    out, i = [], 0
    while True:
        a = text.find(begin, i)
        if a < 0:
            return out
        b = text.find(end, a)
        if b < 0:
            return out
        out.append(text[a:b + len(end)].encode())
        i = b + len(end)


def _load(pems, where):
    out = []
    for pem in pems:
        # Some other roots in the store have a serial cryptography warns about (and will one
        # day refuse); they are not ours to judge, and one bad entry must not stop the build.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out.append((x509.load_pem_x509_certificate(pem), where))
            except ValueError:
                pass
    return out


def debian_certificates(directory=DEBIAN_DIR):
    certs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.crt"))):
        with open(path) as f:
            certs += _load(_pem_blocks(f.read()), "ca-certificates " + os.path.basename(path))
    return certs


def certifi_certificates():
    try:
        import certifi
    except ImportError:
        return []
    with open(certifi.where()) as f:
        text = f.read()
    version = getattr(certifi, "__version__", "?")
    return _load(_pem_blocks(text), "certifi %s" % version)


def source_certificates(source="auto", debian_dir=DEBIAN_DIR):
    """(certificates, where they came from). auto: Debian's package, else certifi."""
    if source in ("auto", "debian"):
        certs = debian_certificates(debian_dir)
        if certs or source == "debian":
            if not certs:
                raise CAError("no certificates in %s: apt-get install ca-certificates" % debian_dir)
            return certs, "Debian ca-certificates"
    certs = certifi_certificates()
    if not certs:
        raise CAError("no trusted source: apt-get install ca-certificates, or make venv (certifi)")
    return certs, "certifi"


def _self_signed(cert):
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except Exception:
        return False
    return cert.issuer == cert.subject


def check_root(cert, name, now=None):
    """Raise CAError unless cert is the self-signed CA root called name, valid now."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if _cn(cert.subject) != name:
        raise CAError("%s: subject is %s" % (name, cert.subject.rfc4514_string()))
    if name in PINNED:
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not orgs or orgs[0].value != ORG:
            raise CAError("%s: organisation is not %s" % (name, ORG))
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CAError("%s: not a CA certificate (basicConstraints)" % name)
    if not _self_signed(cert):
        raise CAError("%s: not self-signed (not a root)" % name)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CAError("%s: not valid now (%s .. %s)" % (name, cert.not_valid_before_utc,
                                                         cert.not_valid_after_utc))
    der = cert.public_bytes(serialization.Encoding.DER)
    fp = hashlib.sha256(der).hexdigest()
    if name in PINNED and fp != PINNED[name]:
        raise CAError("%s: SHA-256 %s is not the published %s" % (name, fp, PINNED[name]))
    return der, fp


def fingerprint_text(fp):
    return ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()


def build(out=OUT, roots=DEFAULT_ROOTS, source="auto", debian_dir=DEBIAN_DIR, log=print):
    """Write the bundle (concatenated DER) and its description; returns [(name, sha256, from)]."""
    certs, origin = source_certificates(source, debian_dir)
    chosen = []
    for name in roots:
        found = [(c, where) for c, where in certs if _cn(c.subject) == name]
        if not found:
            raise CAError("%s: not in %s" % (name, origin))
        # Several certificates may carry the same name (a cross-signed copy): the self-signed
        # one is the root.
        errors = []
        for cert, where in found:
            try:
                der, fp = check_root(cert, name)
                chosen.append((name, der, fp, where, cert.not_valid_after_utc))
                break
            except CAError as e:
                errors.append(str(e))
        else:
            raise CAError("; ".join(errors))
    bundle = b"".join(der for _n, der, _fp, _w, _exp in chosen)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bundle)
    os.replace(tmp, out)
    lines = ["%s  SHA-256 %s  valid until %s  (%s)" % (n, fingerprint_text(fp), exp.date(), w)
             for n, _der, fp, w, exp in chosen]
    with open(os.path.splitext(out)[0] + ".txt", "w") as f:
        f.write("Roots in %s (concatenated DER), from %s:\n" % (os.path.basename(out), origin))
        f.write("".join(line + "\n" for line in lines))
    log("cloud_ca: %s: %d root(s), %d bytes, from %s" % (os.path.relpath(out, ROOT)
                                                        if out.startswith(ROOT) else out,
                                                        len(chosen), len(bundle), origin))
    for line in lines:
        log("  " + line)
    return [(n, fp, w) for n, _der, fp, w, _exp in chosen]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--source", choices=("auto", "debian", "certifi"), default="auto")
    ap.add_argument("--root", action="append",
                    help="a root's common name, repeatable (default: %s)"
                    % ", ".join(DEFAULT_ROOTS))
    a = ap.parse_args(argv)
    try:
        build(a.out, tuple(a.root or DEFAULT_ROOTS), a.source)
    except CAError as e:
        print("cloud_ca: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
