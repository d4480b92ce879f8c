"""Claims held in the store on a lease: FIFO mutual exclusion between tasks and daemons.

Owns the lease of a process (``Session``: granted once, renewed by a task, lost if
renewal fails) and etcd's queue-lock recipe (``Claims``): a waiter writes its own key
under a prefix on the session's lease and holds the claim once its key is the oldest
(lowest ``create_revision``) under that prefix, so claims are granted in the order they
were asked for. It waits on a watch for the key just before it to go (released, or its
lease expired with a dead daemon), never by polling. Nothing here knows what a claim
protects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from virtfleet.errors import ConflictError, NotFoundError, VirtfleetError
from virtfleet.state.keys import claim_scope, claim_session_key
from virtfleet.state.store import Compare, KeyValue, Put, StateStore

log = logging.getLogger(__name__)
SESSION_TTL_S = 30.0  # long enough for a loaded host's stalls; a restart revokes at once
LOCAL_HOST = "local"  # the owning host until hosts have ids: the composition root passes it


class Session:
    """One lease for a process's claims, renewed every third of its TTL while it lives.

    ``name`` (unique to one process, e.g. its host id): the lease is recorded under it,
    and a new session of that name revokes the one before, whose process is gone (a
    restarted daemon does not wait for its own dead claims to expire)."""

    def __init__(
        self, store: StateStore, ttl_s: float = SESSION_TTL_S, name: str | None = None
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._name = name
        self._lease: int | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._granting = asyncio.Lock()

    async def lease(self) -> int:
        """The live lease (granted on first use, and again after one was lost)."""
        async with self._granting:
            if self._lease is None or self._keeper is None or self._keeper.done():
                self._lease = await self._grant()
                self._keeper = asyncio.create_task(self._keep(self._lease), name="store-session")
            return self._lease

    async def _grant(self) -> int:
        lease = await self._store.grant_lease(self._ttl)
        if self._name is None:
            return lease
        key = claim_session_key(self._name)
        before = await self._store.get(key)
        if before is not None and before.lease not in (None, lease):
            await self._store.revoke(before.lease)  # its process is gone: so are its claims
            log.info("revoked the claims of an earlier process of %s", self._name)
        await self._store.put(key, str(lease).encode(), lease=lease)
        return lease

    async def _keep(self, lease: int) -> None:
        try:
            while True:
                await asyncio.sleep(self._ttl / 3)  # a renewal timer, not synchronisation
                await self._store.keepalive(lease)
        except NotFoundError:
            log.warning("store session lease %d expired: its claims are gone", lease)
        except VirtfleetError as err:  # the store closed under us: nothing left to renew
            log.info("store session lease %d no longer renewed: %s", lease, err.message)

    async def close(self) -> None:
        """Stop renewing and revoke the lease: every claim on it goes at once."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._lease is not None:
            with contextlib.suppress(Exception):  # the store may be closed already
                await self._store.revoke(self._lease)
        self._lease = None


class Claims:
    """FIFO claims under ``/claims/{scope}/``: one holder per name at a time."""

    def __init__(self, store: StateStore, session: Session, scope: str, owner: str) -> None:
        self._store = store
        self._session = session
        self._scope = claim_scope(scope)
        self._owner = owner.encode()

    def prefix(self, name: str) -> str:
        return f"{self._scope}{name}/"

    async def ask(self, name: str, ticket: str | None = None) -> str:
        """Queue for ``name`` now (the place in line is taken here); the ticket's key."""
        key = f"{self.prefix(name)}{ticket or secrets.token_hex(8)}"
        lease = await self._session.lease()
        done = await self._store.txn([Compare(key, 0)], [Put(key, self._owner, lease)])
        if not done:
            raise ConflictError(f"claim {key!r} is already asked for")
        return key

    async def first(self, key: str) -> bool:
        """Whether ``key`` holds its claim now (is the oldest in its line)."""
        found = await self._store.range(key.rsplit("/", 1)[0] + "/")
        return _ahead(found.kvs, key) is None

    async def wait(self, key: str) -> None:
        """Return once ``key`` holds its claim; ``ConflictError`` if it was lost."""
        line = key.rsplit("/", 1)[0] + "/"
        while True:
            found = await self._store.range(line)
            ahead = _ahead(found.kvs, key)
            if ahead is None:
                return
            await gone(self._store, ahead, found.revision)

    async def release(self, key: str) -> None:
        with contextlib.suppress(Exception):  # a closed store has dropped it anyway
            await self._store.delete(key)

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s claim for the block (waiting for earlier holders first)."""
        key = await self.ask(name)
        try:
            await self.wait(key)
            yield
        finally:
            await self.release(key)


def _ahead(kvs: list[KeyValue], key: str) -> str | None:
    """The key just before ``key`` in its line (None: ``key`` is first); lost: conflict."""
    mine = next((kv for kv in kvs if kv.key == key), None)
    if mine is None:
        raise ConflictError(f"claim {key!r} was lost (its lease expired)")
    earlier = [kv for kv in kvs if kv.create_revision < mine.create_revision]
    return max(earlier, key=lambda kv: kv.create_revision).key if earlier else None


async def gone(store: StateStore, key: str, after: int) -> None:
    """Return once ``key`` is deleted after revision ``after``."""
    watch = store.watch(key, after)
    try:
        async for change in watch:
            if change.key == key and change.type == "delete":
                return
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()
