"""API tokens for automation: mint (shown once), list, revoke, and authenticate a presented token.

Owns the token rules: a token is ``vf_<id>.<secret>`` and only the SHA-256 of
its secret is stored; nobody mints a token above their own role; a token
expires after ``DEFAULT_TTL_S`` (90 days) unless asked otherwise, ``never``
only explicitly; a token minted with a token expires no later than it; a
token acts with the lesser of its role and its owner's current role and dies
with its owner (and with its owner's password: ``AuthService``); revoked and
expired tokens are refused with a message saying so. Users see and revoke
their own tokens, admins everyone's. Must not know HTTP (the API reads the
``Authorization`` header).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime, timedelta

from virtfleet.errors import AuthError, ForbiddenError, NotFoundError
from virtfleet.model.auth import (
    LOCAL_ROOT,
    NewToken,
    Principal,
    Role,
    TokenInfo,
    TokenRecord,
)
from virtfleet.model.event import utcnow
from virtfleet.service.credentials import (
    TOKEN_PREFIX,
    new_secret,
    same_hash,
    sha256_hex,
    split_secret,
)
from virtfleet.state.accounts import TokenRepo, UserRepo
from virtfleet.state.store import StateStore

MAX_DESCRIPTION = 200
DEFAULT_TTL_S = 90 * 86400.0  # a forgotten token dies by itself; never only when asked


class TokenService:
    def __init__(self, store: StateStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.tokens = TokenRepo(store)
        self.users = UserRepo(store)
        self.clock = clock

    async def create(
        self,
        actor: Principal,
        role: Role,
        expires_in_s: float | None = None,
        description: str = "",
        never_expires: bool = False,
    ) -> NewToken:
        """Mint a token owned by ``actor``; ``ForbiddenError`` above the actor's own role.

        It lives ``expires_in_s`` (default ``DEFAULT_TTL_S``), or forever with ``never_expires``.
        """
        if not actor.role.allows(role):
            raise ForbiddenError(f"a {actor.role} cannot mint a token with role {role}")
        lifetime = None if never_expires else (expires_in_s or DEFAULT_TTL_S)
        expires_at = self._expiry(actor, lifetime)
        token_id, secret = new_secret()
        record = TokenRecord(
            id=token_id,
            owner=actor.username,
            role=role,
            description=description[:MAX_DESCRIPTION],
            created_at=self.clock(),
            expires_at=expires_at,
            secret_sha256=sha256_hex(secret),
        )
        await self.tokens.create(record)
        info = record.info().model_dump()
        return NewToken(**info, token=f"{TOKEN_PREFIX}{token_id}.{secret}")

    def _expiry(self, actor: Principal, expires_in_s: float | None) -> datetime | None:
        """When a new token expires: as asked, but never after the token minting it."""
        asked = None if expires_in_s is None else self.clock() + timedelta(seconds=expires_in_s)
        if actor.via != "token" or actor.expires_at is None:
            return asked
        return actor.expires_at if asked is None else min(asked, actor.expires_at)

    async def list(self, actor: Principal) -> builtins.list[TokenInfo]:
        """The actor's own tokens (an admin: everyone's), oldest first; never a secret."""
        records = [
            t for t in await self.tokens.list() if actor.is_admin or t.owner == actor.username
        ]
        return [t.info() for t in sorted(records, key=lambda t: t.created_at)]

    async def revoke(self, actor: Principal, token_id: str) -> TokenInfo:
        """Revoke a token (again: no change); ``ForbiddenError`` for another user's token."""
        record = await self.tokens.get(token_id)
        if record is None:
            raise NotFoundError(f"token {token_id!r} not found")
        if record.owner != actor.username and not actor.is_admin:
            raise ForbiddenError(f"token {token_id!r} belongs to another user")
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": self.clock()})
            await self.tokens.put(record)
        return record.info()

    async def revoke_owned(self, owner: str) -> int:
        """Revoke every live token of ``owner`` (the user was deleted or its password
        changed); how many."""
        count = 0
        for record in await self.tokens.list():
            if record.owner == owner and record.revoked_at is None:
                await self.tokens.put(record.model_copy(update={"revoked_at": self.clock()}))
                count += 1
        return count

    async def authenticate(self, presented: str) -> Principal:
        """The principal a presented token stands for; ``AuthError`` saying why not."""
        parts = split_secret(presented, TOKEN_PREFIX)
        record = await self.tokens.get(parts[0]) if parts else None
        if record is None or parts is None or not same_hash(record.secret_sha256, parts[1]):
            raise AuthError("invalid API token")
        if record.revoked_at is not None:
            raise AuthError(f"API token {record.id} was revoked")
        if record.expires_at is not None and record.expires_at <= self.clock():
            raise AuthError(
                f"API token {record.id} expired at {record.expires_at:%Y-%m-%d %H:%M} UTC"
            )
        role = await self._owner_role(record)
        return Principal(
            username=record.owner,
            role=record.role.at_most(role),
            via="token",
            token_id=record.id,
            expires_at=record.expires_at,
        )

    async def _owner_role(self, record: TokenRecord) -> Role:
        if record.owner == LOCAL_ROOT:
            return Role.ADMIN
        found = await self.users.find(record.owner)
        if found is None:
            raise AuthError(f"the owner of API token {record.id} no longer exists")
        if found[0].disabled:
            raise AuthError(f"the owner of API token {record.id} is disabled")
        return found[0].role
