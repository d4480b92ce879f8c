"""The cluster CA and this member's certificate, in ``<data-dir>/cluster/``.

Owns ``ca.crt`` / ``ca.key`` (an ECDSA P-256 CA valid ten years, made once by the
host that forms the cluster) and ``member.crt`` / ``member.key``: this host's
certificate signed by that CA, for etcd's peer and client TLS alike (server and client
auth), named for the host's addresses. Keys are 0600 in a 0700 directory. Signing a
certificate for another host (a join) is ``sign_member``. Must not start processes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from virtfleet.errors import InvalidInputError
from virtfleet.util.fingerprint import fingerprint_pem

CA_VALIDITY = datetime.timedelta(days=3650)
MEMBER_VALIDITY = datetime.timedelta(days=3650)
# A name in every member's certificate: clients given several members' addresses at once
# verify each against it (state.etcd: gRPC checks one name for all of them).
MEMBER_NAME = "etcd-member.virtfleet.invalid"


@dataclass(frozen=True)
class ClusterFiles:
    """The paths of the cluster's TLS material under ``<data-dir>/cluster``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def cert(self) -> Path:
        return self.root / "member.crt"

    @property
    def key(self) -> Path:
        return self.root / "member.key"

    def fingerprint(self) -> str:
        """The CA certificate's SHA-256 fingerprint (what a joining host pins)."""
        return fingerprint_pem(self.ca_cert.read_text())


_CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True,
    crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def ensure_ca(files: ClusterFiles, name: str) -> bool:
    """Make the cluster CA unless it exists; whether it was made now."""
    if files.ca_cert.exists() and files.ca_key.exists():
        return False
    files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"virtfleet cluster CA {name}"[:64])]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(files.ca_key, key_pem(key))
    write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return True


def ensure_member_cert(files: ClusterFiles, name: str, hosts: Iterable[str]) -> None:
    """This host's key and certificate signed by the local CA (made once, kept after)."""
    if files.cert.exists() and files.key.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, name)
    cert_pem = sign_member(files, csr, hosts)
    write_private(files.key, key_pem(key))
    write_public(files.cert, cert_pem)


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A PEM certificate request for member ``name`` (its key stays with the caller)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_member(files: ClusterFiles, csr_pem: bytes, hosts: Iterable[str]) -> bytes:
    """Sign a member's request with the cluster CA, for ``hosts`` (names or addresses)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise InvalidInputError(f"not a PEM certificate request: {err}") from None
    if not csr.is_signature_valid:
        raise InvalidInputError("the certificate request's signature is not valid")
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + MEMBER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(MEMBER_NAME)]
    seen: set[str] = {"localhost", MEMBER_NAME}
    for host in ["127.0.0.1", *hosts]:
        host = host.strip("[]")
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` 0600 from birth, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (certificates: no secret)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
