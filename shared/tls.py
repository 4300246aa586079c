"""The LAN mode's certificates: a CA generated once, and a server certificate for the
LAN address signed by it (`greenctl up --lan ADDRESS`).

Files under <state dir>/tls/ (directory 0700, every file 0600): ca.pem, ca.key,
server.pem, server.key. The CA lives ~10 years and is never regenerated (its
fingerprint is in every join token); the server certificate is made again when the
address changes or it is within 30 days of its end. Keys are EC P-256.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from shared.files import private_file

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE_DAYS = 30
LOCAL_NAMES = ("127.0.0.1", "localhost")   # local services reach the TLS-only broker through these


def fingerprint_der(der: bytes) -> str:
    """'sha256:<hex>' of a certificate's DER bytes (what join tokens carry)."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _names(address: str) -> list:
    from cryptography import x509

    out, seen = [], set()
    for name in (address, *LOCAL_NAMES):
        if name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _make_ca(tls: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"greenctl CA {socket.gethostname()}"[:64])])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    private_file(tls / "ca.key", _key_pem(key))
    private_file(tls / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))


def _server_ok(tls: Path, address: str) -> bool:
    """True when server.pem exists, is signed by this CA, names `address` and is not near its end."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate((tls / "server.pem").read_bytes())
        ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
        if not (tls / "server.key").exists():
            return False
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, Exception):
        return False
    if set(sans) != set(_names(address)):
        return False
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_BEFORE_DAYS)


def _make_server(tls: Path, address: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    key = _key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address[:64])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(address)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    private_file(tls / "server.key", _key_pem(key))
    private_file(tls / "server.pem", cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificates(state_dir: Path, address: str) -> Path:
    """The tls/ dir of `state_dir` with a CA (made once) and a server certificate for
    `address` (remade when the address changed or it is near its end)."""
    tls = state_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o700)
    if not ((tls / "ca.pem").exists() and (tls / "ca.key").exists()):
        _make_ca(tls)
    if not _server_ok(tls, address):
        _make_server(tls, address)
    return tls


def ca_fingerprint(state_dir: Path) -> str:
    """'sha256:<hex>' of this state dir's CA certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((state_dir / "tls" / "ca.pem").read_bytes())
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))
