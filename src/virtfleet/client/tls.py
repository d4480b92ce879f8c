"""Certificate pinning for remotes: trust exactly one certificate, by its SHA-256 fingerprint.

A virtfleet daemon's certificate is usually self-signed, so no CA vouches for
it. Like SSH, the client pins the fingerprint it accepted on first use and
from then on compares the peer's certificate with the pin itself, after every
TLS handshake (sync sockets for httpx, memory BIOs for anyio and asyncio, so
httpx, its async client and websockets all check). Chain and host name checks
are off only in such a pinned context. Owns ``pinned_context``,
``fetch_fingerprint`` (first contact) and ``CertificateMismatch``. Must not
read or write the remotes file (``client.remotes``).
"""

from __future__ import annotations

import socket
import ssl

from virtfleet.util.fingerprint import fingerprint_der, normalize_fingerprint


class CertificateMismatch(ssl.SSLCertVerificationError):
    """The peer's certificate is not the pinned one (or it sent none)."""

    def __init__(self, pinned: str, seen: str | None) -> None:
        super().__init__(f"certificate fingerprint {seen or 'missing'} is not the pinned {pinned}")
        self.pinned = pinned
        self.seen = seen


class PinnedContext(ssl.SSLContext):
    """A client context that accepts only the certificate whose fingerprint is ``pin``."""

    pin: str = ""

    def check(self, der: bytes | None) -> None:
        seen = fingerprint_der(der) if der else None
        if seen != self.pin:
            raise CertificateMismatch(self.pin, seen)


class _PinnedSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check(self.context, self.getpeercert(binary_form=True))


class _PinnedObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        _check(self.context, self.getpeercert(binary_form=True))


def _check(context: ssl.SSLContext, der: bytes | None) -> None:
    if isinstance(context, PinnedContext):
        context.check(der)


PinnedContext.sslsocket_class = _PinnedSocket
PinnedContext.sslobject_class = _PinnedObject


def pinned_context(fingerprint: str) -> PinnedContext:
    """A TLS client context trusting only the certificate with ``fingerprint``."""
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.pin = normalize_fingerprint(fingerprint)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The pin replaces CA and host name checks; ``check`` runs after every handshake.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch_fingerprint(host: str, port: int, timeout_s: float = 10.0) -> str:
    """The fingerprint of the certificate ``host:port`` presents (trusting nothing yet)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # first contact: the user compares the fingerprint
    with (
        socket.create_connection((host, port), timeout=timeout_s) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return fingerprint_der(der)


def find_mismatch(err: BaseException | None) -> CertificateMismatch | None:
    """The ``CertificateMismatch`` behind ``err`` (httpx and httpcore wrap it), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, CertificateMismatch):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
