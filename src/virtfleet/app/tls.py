"""The daemon's TLS certificate: the operator's, or a self-signed one made on first start.

Owns ``<data-dir>/tls/server.crt`` and ``server.key`` (directory 0700, key
0600): an ECDSA P-256 key and a self-signed certificate valid for ten years,
named for ``localhost``, this host's name, the loopback addresses and the
concrete addresses the daemon listens on. It is made once and never replaced
on its own, so the fingerprint clients pinned stays valid. Must not open
sockets or choose listeners (``app.serving`` does).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from virtfleet.errors import InvalidInputError
from virtfleet.util.fingerprint import fingerprint_pem

VALIDITY = datetime.timedelta(days=3650)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Certificate:
    """A certificate and key on disk, with the certificate's SHA-256 fingerprint."""

    cert: Path
    key: Path
    fingerprint: str
    generated: bool = False


def server_certificate(
    tls_dir: Path, cert: Path | None, key: Path | None, hosts: Iterable[str] = ()
) -> Certificate:
    """The operator's ``cert``/``key`` if given (both or neither), else the data dir's
    self-signed pair, made now if missing; ``InvalidInputError`` if unreadable."""
    if (cert is None) != (key is None):
        raise InvalidInputError("--tls-cert and --tls-key go together: give both or neither")
    generated = False
    if cert is None or key is None:
        cert, key = tls_dir / "server.crt", tls_dir / "server.key"
        if not (cert.exists() and key.exists()):
            generate_self_signed(cert, key, hosts)
            generated = True
    try:
        fingerprint = fingerprint_pem(cert.read_text())
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"cannot read the TLS certificate {cert}: {err}") from err
    if not os.access(key, os.R_OK):
        raise InvalidInputError(f"cannot read the TLS key {key}")
    return Certificate(cert, key, fingerprint, generated)


def generate_self_signed(cert_path: Path, key_path: Path, hosts: Iterable[str] = ()) -> None:
    """Write a new key (0600) and a self-signed certificate for this host and ``hosts``."""
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, pem_key)
    cert = _self_signed(key, socket.gethostname(), hosts)
    tmp = cert_path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.replace(cert_path)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _self_signed(
    key: ec.EllipticCurvePrivateKey, hostname: str, hosts: Iterable[str]
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"virtfleet {hostname}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hostname, hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _alt_names(hostname: str, hosts: Iterable[str]) -> list[x509.GeneralName]:
    dns: list[str] = ["localhost"]
    ips: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for host in [hostname, *hosts]:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host and host not in dns:
                dns.append(host)
            continue
        if not ip.is_unspecified and ip not in ips:
            ips.append(ip)
    return [*(x509.DNSName(d) for d in dns), *(x509.IPAddress(i) for i in ips)]
