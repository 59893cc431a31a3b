"""The lab's PVE certificates: a CA (what clients verify with) and the nodes' server cert.

Like a PVE cluster: one cluster CA (`pve-root-ca.pem`) signs each node's `pve-ssl.pem`.
Here one server certificate names every node (address and name), so one process can serve
all three addresses. Needs `cryptography` (fakepve[crypto]).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def make_certs(directory: Path, hosts: list[str], days: int = 365) -> dict[str, str]:
    """Write ca.pem, ca.key, pve-ssl.pem, pve-ssl.key into DIRECTORY (kept if present and
    still naming every host); returns their paths and the server cert's SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    crt, key = directory / "pve-ssl.pem", directory / "pve-ssl.key"
    names = []
    for host in ["localhost", "127.0.0.1", *hosts]:
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)

    if crt.exists() and key.exists() and ca_pem.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        now = datetime.datetime.now(datetime.UTC)
        if all(n in have for n in names) and cert.not_valid_after_utc > now + datetime.timedelta(days=1):
            return _result(ca_pem, crt, key, cert)

    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    ca_private = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox Virtual Environment (lab)"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PVE Cluster Manager CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Manager CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days * 10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_private.public_key()), critical=False)
        .sign(ca_private, hashes.SHA256())
    )
    server_private = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PVE Cluster Node"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Proxmox Virtual Environment"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(server_name)
        .issuer_name(ca_name)
        .public_key(server_private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_private.public_key()), critical=False)
        .sign(ca_private, hashes.SHA256())
    )
    nokey = serialization.NoEncryption()
    _write(ca_key, ca_private.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey), 0o600)
    _write(ca_pem, ca_cert.public_bytes(pem), 0o644)
    _write(key, server_private.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey), 0o600)
    _write(crt, cert.public_bytes(pem) + ca_cert.public_bytes(pem), 0o644)
    return _result(ca_pem, crt, key, cert)


def _result(ca_pem: Path, crt: Path, key: Path, cert) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization

    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return {"ca_file": str(ca_pem), "cert_file": str(crt), "key_file": str(key), "fingerprint": ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))}
