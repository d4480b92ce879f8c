"""Certificate pinning: trust exactly one certificate, by its SHA-256 fingerprint.

A virtfleet daemon's certificate is usually self-signed, so no CA vouches for
it. Like SSH, a client pins the fingerprint it accepted (a remote's first use,
or a cluster member's host record) and compares the peer's certificate with the
pin itself after every TLS handshake (sync sockets for httpx, memory BIOs for
anyio and asyncio, so httpx, its async client and websockets all check). Chain
and host name checks are off only in such a pinned context. Owns
``pinned_context``, ``CertificateMismatch`` and ``find_mismatch``; shared by the
client (remotes) and the API (forwarding to a cluster member).
"""

from __future__ import annotations

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


def find_mismatch(err: BaseException | None) -> CertificateMismatch | None:
    """The ``CertificateMismatch`` behind ``err`` (httpx and httpcore wrap it), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, CertificateMismatch):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
