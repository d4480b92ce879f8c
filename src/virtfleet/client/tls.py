"""Certificate pinning for remotes: trust exactly one certificate, by its SHA-256 fingerprint.

A virtfleet daemon's certificate is usually self-signed, so no CA vouches for
it. Like SSH, the client pins the fingerprint it accepted on first use and
from then on compares the peer's certificate with the pin itself, after every
TLS handshake (sync sockets for httpx, memory BIOs for anyio and asyncio, so
httpx, its async client and websockets all check). Chain and host name checks
are off only in such a pinned context. Owns ``fetch_fingerprint``
(first contact); the pinned context itself is ``virtfleet.util.pinning``'s. Must not
read or write the remotes file (``client.remotes``).
"""

from __future__ import annotations

import socket
import ssl

from virtfleet.util.fingerprint import fingerprint_der
from virtfleet.util.pinning import CertificateMismatch, PinnedContext, find_mismatch, pinned_context

__all__ = [
    "CertificateMismatch",
    "PinnedContext",
    "fetch_fingerprint",
    "find_mismatch",
    "pinned_context",
]


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
