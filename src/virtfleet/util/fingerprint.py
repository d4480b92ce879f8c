"""SHA-256 certificate fingerprints in one spelling, shared by the daemon and its clients.

Owns formatting (``AB:CD:...``, 32 colon-separated upper-case hex pairs, as
``openssl x509 -noout -fingerprint -sha256`` prints them) and parsing what a
user types (any case, with or without colons or a ``sha256:`` prefix). Must not
do I/O or any TLS itself.
"""

from __future__ import annotations

import hashlib
import ssl

_HEX = frozenset("0123456789abcdef")


def fingerprint_der(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER-encoded certificate."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprint_pem(pem: str) -> str:
    """The fingerprint of the first certificate in ``pem`` (a leaf before its chain)."""
    end = "-----END CERTIFICATE-----"
    first = pem[: pem.index(end) + len(end)] if end in pem else pem
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(first))


def normalize_fingerprint(text: str) -> str:
    """``text`` in the canonical spelling; ``ValueError`` if it is not a SHA-256 fingerprint."""
    raw = text.strip().lower()
    for prefix in ("sha256:", "sha256 fingerprint=", "sha-256:"):
        raw = raw.removeprefix(prefix)
    digits = raw.replace(":", "").replace(" ", "")
    if len(digits) != 64 or not set(digits) <= _HEX:
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {text!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2)).upper()
