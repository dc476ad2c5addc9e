#!/usr/bin/env python3
# Like scripts/make-load-certs, in one process: 10,000 certificates in about a minute instead of
# hours of openssl invocations (needs python3-cryptography). Same names, SANs and shared key.
#
# usage: make-load-certs.py CA_DIR OUT_DIR N [TRUST_DOMAIN] [TENANTS]
import sys, os, datetime
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
ca_dir, out, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
td = sys.argv[4] if len(sys.argv) > 4 else "example.org"
tenants = int(sys.argv[5]) if len(sys.argv) > 5 else 4
os.makedirs(out, exist_ok=True)
ca_cert = x509.load_pem_x509_certificate(open(f"{ca_dir}/ca.pem", "rb").read())
ca_key = serialization.load_pem_private_key(open(f"{ca_dir}/ca.key", "rb").read(), None)
key = ec.generate_private_key(ec.SECP256R1())
key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pagebroker load"), x509.NameAttribute(NameOID.COMMON_NAME, "load guest")])
for i in range(count):
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}/tenant/load-{i % tenants}/guest/load-{i}")]), critical=False))
    cert = b.sign(ca_key, hashes.SHA256())
    open(f"{out}/guest-{i}.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{out}/guest-{i}.key", "wb").write(key_pem)
