"""Credential primitives: argon2 password hashing, secrets and their hashes, login throttling.

Owns the password policy, the argon2 parameters (off the event loop: hashing
costs tens of milliseconds by design), the ``<id>.<secret>`` shape of session
cookies and API tokens (``vf_<id>.<secret>``) and the sliding-window
``LoginLimiter`` (an attempt counts *before* its password is checked, so parallel
guesses cannot all be evaluated), and the bound on concurrent argon2 verifies (each
costs tens of MiB and milliseconds: a flood queues, then is refused, instead of
exhausting the host). Must not store anything: the services that use these do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from virtfleet.errors import InvalidInputError, RateLimitedError

MAX_VERIFYING = 2  # argon2 verifies at once (each ~64 MiB, tens of ms); more wait
MAX_WAITING = 32  # verifies queued behind those; beyond, a login is refused (429)
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


def source_net(source: str) -> str:
    """The network a login source is limited as: an IPv4 address, an IPv6 /64 (one
    host owns a whole /64), anything else (``unix``) as is."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


class Passwords:
    """argon2id hashing and verification, run in a worker thread; at most
    ``MAX_VERIFYING`` verifies at once and ``MAX_WAITING`` queued."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None
        self._slots = asyncio.Semaphore(MAX_VERIFYING)
        self._waiting = 0

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash, spend the same time and say no.

        ``RateLimitedError`` when ``MAX_WAITING`` verifies are queued already."""
        if self._waiting >= MAX_WAITING:
            raise RateLimitedError("too many logins in progress; try again in 1 s")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            return await self._verify(password_hash, password)
        finally:
            self._slots.release()

    async def _verify(self, password_hash: str | None, password: str) -> bool:
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
    """At most ``max_failures`` failed attempts per key per ``window_s``; the keys are the
    caller's (``AuthService``: the user at a source network, and the source network)."""

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

    def attempt(self, *keys: str) -> float:
        """Count an attempt on every key *before* it is evaluated; its time stamp (for
        ``forgive``). ``RateLimitedError`` if any key used up its attempts in the window.
        Checking and counting are one step: parallel guesses cannot all slip through."""
        self.check(*keys)
        now = self.clock()
        for key in keys:
            self._recent(key, now).append(now)
        self._bound()
        return now

    def forgive(self, stamp: float, *keys: str) -> None:
        """Take back the attempt counted at ``stamp`` on ``keys`` (it succeeded)."""
        for key in keys:
            recent = self._failures.get(key)
            if recent is not None and stamp in recent:
                recent.remove(stamp)

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
