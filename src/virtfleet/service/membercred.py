"""How one cluster member proves to another that it forwards a request, and for whom.

Owns the ``MemberCredentials`` interface (``sign`` a forwarded request, ``verify`` one
received) and its first implementation, ``SharedSecretCredentials``: an HMAC-SHA256
with a cluster secret kept in the store (``/cluster/member-secret``, made once by the
first member that needs it; the store is trusted) over the method, the target (path and
query), the date, the body's SHA-256, the forwarding host and the user it asserts. A
signature older or newer than ``VALIDITY_S`` is refused, so a captured request cannot
be replayed later. The cluster CA's mTLS (cluster init/join) can replace this class
behind the same interface. Must not know HTTP frameworks: headers are a plain mapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from virtfleet.errors import MemberAuthError, RevisionConflictError
from virtfleet.model.auth import Principal, Role
from virtfleet.state.keys import MEMBER_SECRET
from virtfleet.state.store import StateStore

VALIDITY_S = 30.0  # a forwarded request is signed when sent: seconds, not minutes
BY = "x-virtfleet-forwarded-by"  # the forwarding host's id
USER = "x-virtfleet-forwarded-user"  # the original principal, base64 JSON
DATE = "x-virtfleet-forwarded-date"  # unix seconds when signed
SIGNATURE = "x-virtfleet-forwarded-signature"
HEADERS = (BY, USER, DATE, SIGNATURE)


@dataclass(frozen=True)
class Forwarded:
    """A verified forwarded request: which member sent it and for whom."""

    host_id: str
    principal: Principal


class MemberCredentials(Protocol):
    async def sign(
        self, method: str, target: str, body: bytes, principal: Principal
    ) -> dict[str, str]:
        """The headers that let the owner verify this member forwards ``principal``'s request."""
        ...

    async def verify(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes
    ) -> Forwarded:
        """The member and user a forwarded request carries; ``MemberAuthError`` if it fails."""
        ...


class SharedSecretCredentials:
    """``MemberCredentials`` by HMAC with a cluster secret kept in the store."""

    def __init__(
        self, store: StateStore, host_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.host_id = host_id
        self.clock = clock
        self._secret: bytes | None = None

    async def secret(self, make: bool = True) -> bytes | None:
        """The cluster secret; the first member to sign makes it (compare-and-swap). Without
        ``make`` (verifying) None if there is none yet: a request must not write it."""
        if self._secret is None:
            found = await self.store.get(MEMBER_SECRET)
            if found is None and make:
                try:
                    made = secrets.token_bytes(32)
                    await self.store.put(MEMBER_SECRET, made, expect_revision=0)
                except RevisionConflictError:
                    pass  # another member made it first: use theirs
                found = await self.store.get(MEMBER_SECRET)
            if found is None:
                return None
            self._secret = found.value
        return self._secret

    async def sign(
        self, method: str, target: str, body: bytes, principal: Principal
    ) -> dict[str, str]:
        user = _encode_user(principal)
        date = str(int(self.clock()))
        secret = await self.secret()
        assert secret is not None  # made above
        mac = _mac(secret, method, target, date, body, self.host_id, user)
        return {BY: self.host_id, USER: user, DATE: date, SIGNATURE: mac}

    async def verify(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes
    ) -> Forwarded:
        by, user, date, sent = (headers.get(name, "") for name in HEADERS)
        if not (by and user and date and sent):
            raise MemberAuthError("forwarded request without a complete member credential")
        try:
            age = abs(self.clock() - int(date))
        except ValueError:
            age = VALIDITY_S + 1
        if age > VALIDITY_S:
            raise MemberAuthError(f"member credential expired or from the future ({date!r})")
        secret = await self.secret(make=False)
        if secret is None:
            raise MemberAuthError("no member has signed a request in this cluster yet")
        mac = _mac(secret, method, target, date, body, by, user)
        if not hmac.compare_digest(mac.encode(), sent.encode()):
            raise MemberAuthError(f"member credential of host {by[:64]!r} does not verify")
        return Forwarded(host_id=by, principal=_decode_user(user))


def _mac(
    secret: bytes, method: str, target: str, date: str, body: bytes, by: str, user: str
) -> str:
    digest = hashlib.sha256(body).hexdigest()
    text = "\n".join((method.upper(), target, date, digest, by, user)).encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def _encode_user(principal: Principal) -> str:
    data = {"username": principal.username, "role": principal.role.value}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _decode_user(user: str) -> Principal:
    try:
        data = json.loads(base64.urlsafe_b64decode(user.encode()))
        return Principal(username=str(data["username"]), role=Role(data["role"]), via="forwarded")
    except (ValueError, KeyError, TypeError) as err:
        raise MemberAuthError("member credential names no valid user") from err
