"""Typed repositories of users, API tokens and login sessions (keys: see ``state.repos``).

Owns reading and writing ``UserRecord``, ``TokenRecord`` and ``SessionRecord``
under ``/users/``, ``/tokens/`` and ``/sessions/``; sessions are put on a store
lease of their TTL so they vanish by themselves. Must not hash or check
secrets: callers hand in records that already hold only hashes.
"""

from __future__ import annotations

import builtins

from virtfleet.errors import AlreadyExistsError
from virtfleet.model.auth import SessionRecord, TokenRecord, UserRecord
from virtfleet.state.keys import SESSIONS, TOKENS, USERS
from virtfleet.state.store import Compare, Put, StateStore


class UserRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def create(self, user: UserRecord) -> None:
        """Write a new user; ``AlreadyExistsError`` if the name is taken."""
        key = USERS + user.username
        ok = await self.store.txn([Compare(key, 0)], [Put(key, user.model_dump_json().encode())])
        if not ok:
            raise AlreadyExistsError(f"user {user.username!r} already exists")

    async def find(self, username: str) -> tuple[UserRecord, int] | None:
        """The user and its revision, or None."""
        kv = await self.store.get(USERS + username)
        if kv is None:
            return None
        return UserRecord.model_validate_json(kv.value), kv.mod_revision

    async def put(self, user: UserRecord, expect_revision: int | None = None) -> int:
        return await self.store.put(
            USERS + user.username, user.model_dump_json().encode(), expect_revision=expect_revision
        )

    async def delete(self, username: str) -> bool:
        return await self.store.delete(USERS + username)

    async def list(self) -> builtins.list[UserRecord]:
        return [UserRecord.model_validate_json(kv.value) for kv in await self.store.list(USERS)]

    async def any(self) -> bool:
        return bool(await self.store.list(USERS))


class TokenRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def create(self, token: TokenRecord) -> None:
        key = TOKENS + token.id
        ok = await self.store.txn([Compare(key, 0)], [Put(key, token.model_dump_json().encode())])
        if not ok:
            raise AlreadyExistsError(f"token {token.id!r} already exists")

    async def get(self, token_id: str) -> TokenRecord | None:
        kv = await self.store.get(TOKENS + token_id)
        return None if kv is None else TokenRecord.model_validate_json(kv.value)

    async def put(self, token: TokenRecord) -> None:
        await self.store.put(TOKENS + token.id, token.model_dump_json().encode())

    async def list(self) -> builtins.list[TokenRecord]:
        return [TokenRecord.model_validate_json(kv.value) for kv in await self.store.list(TOKENS)]


class SessionRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def create(self, session: SessionRecord, ttl_s: float) -> None:
        """Write ``session`` on a fresh lease of ``ttl_s``: the store deletes it at expiry."""
        lease = await self.store.grant_lease(ttl_s)
        await self.store.put(SESSIONS + session.id, session.model_dump_json().encode(), lease=lease)

    async def get(self, session_id: str) -> SessionRecord | None:
        kv = await self.store.get(SESSIONS + session_id)
        return None if kv is None else SessionRecord.model_validate_json(kv.value)

    async def delete(self, session_id: str) -> None:
        """End the session (and its lease); a missing session is fine."""
        kv = await self.store.get(SESSIONS + session_id)
        if kv is None:
            return
        if kv.lease is not None:
            await self.store.revoke(kv.lease)
        else:
            await self.store.delete(kv.key)

    async def delete_for(self, username: str, keep: str | None = None) -> int:
        """End every session of ``username`` but ``keep``; how many ended."""
        mine = [
            kv
            for kv in await self.store.list(SESSIONS)
            if SessionRecord.model_validate_json(kv.value).username == username
            and kv.key != SESSIONS + (keep or "")
        ]
        for kv in mine:
            if kv.lease is not None:
                await self.store.revoke(kv.lease)
            else:
                await self.store.delete(kv.key)
        return len(mine)
