"""Credential primitives: argon2 password hashing, secrets and their hashes, login throttling.

Owns the password policy, the argon2 parameters (off the event loop: hashing
costs tens of milliseconds by design), the ``<id>.<secret>`` shape of session
cookies and API tokens (``vf_<id>.<secret>``) and the sliding-window
``LoginLimiter``. Must not store anything: the services that use these do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from virtfleet.errors import InvalidInputError, RateLimitedError

MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 hashes any length; a bound keeps a request from costing more
TOKEN_PREFIX = "vf_"


def check_password(password: str) -> str:
    """``password`` if the policy allows it, else ``InvalidInputError``."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInputError(
            f"password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )
    return password


def random_password() -> str:
    return secrets.token_urlsafe(18)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(expected_hex: str, secret: str) -> bool:
    """Whether ``secret`` hashes to ``expected_hex`` (constant time)."""
    return hmac.compare_digest(expected_hex.encode(), sha256_hex(secret).encode())


def new_secret() -> tuple[str, str]:
    """A fresh ``(id, secret)``: 64 random bits to find the record, 256 to prove it."""
    return secrets.token_hex(8), secrets.token_urlsafe(32)


def split_secret(presented: str, prefix: str = "") -> tuple[str, str] | None:
    """``(id, secret)`` of ``<prefix><id>.<secret>``, or None if it is not that shape."""
    if not presented.startswith(prefix):
        return None
    ident, dot, secret = presented[len(prefix) :].partition(".")
    if not dot or len(ident) != 16 or not secret or not ident.isalnum():
        return None
    return ident, secret


class Passwords:
    """argon2id hashing and verification, run in a worker thread."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash, spend the same time and say no."""
        if password_hash is None:
            self._dummy = self._dummy or await self.hash(random_password())
            password_hash = self._dummy
            password = password + "\0"  # never matches the dummy
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)


class LoginLimiter:
    """At most ``max_failures`` failed attempts per key (user, address) per ``window_s``."""

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def check(self, *keys: str) -> None:
        """``RateLimitedError`` if any of ``keys`` used up its failures in the window."""
        now = self.clock()
        for key in keys:
            recent = self._recent(key, now, create=False)
            if len(recent) >= self.max_failures:
                wait = max(1, round(recent[0] + self.window_s - now))
                raise RateLimitedError(f"too many failed logins; try again in {wait} s")

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._recent(key, now).append(now)
        self._bound()

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str, now: float, create: bool = True) -> deque[float]:
        recent = self._failures.setdefault(key, deque()) if create else self._failures.get(key)
        if recent is None:
            return deque()
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        return recent

    def _bound(self) -> None:
        """Forget the stalest keys when there are too many (the map must not grow forever)."""
        if len(self._failures) <= self.max_keys:
            return
        now = self.clock()
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]
