"""Leader election by lease and transaction: one daemon runs the cluster-wide singletons.

Owns campaigning for one role (``/claims/leader/{role}/``): each candidate writes its own key
on its own lease (a ``Claims`` line, state/locks.py); the oldest key leads. The leader
keeps its lease alive; it loses the role the moment its key goes (lease expired, e.g.
the process stalled longer than the TTL, or revoked) and campaigns again; ``stop``
resigns (revokes the lease) so the next candidate takes over at once. ``fence`` is the
compare a leader puts in a transaction so a write only lands while it still leads.
Knows nothing of what the singletons do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from virtfleet.errors import ConflictError, NotFoundError, StoreUnavailableError, VirtfleetError
from virtfleet.state.follow import RETRY_S
from virtfleet.state.locks import Claims, Session, gone
from virtfleet.state.store import Compare, StateStore

log = logging.getLogger(__name__)
LEADER_TTL_S = 10.0


class Leadership:
    """Campaign for ``role`` as ``candidate`` (a host id); ``leading`` while elected."""

    def __init__(
        self, store: StateStore, role: str, candidate: str, ttl_s: float = LEADER_TTL_S
    ) -> None:
        self._store = store
        self._role = role
        self._candidate = candidate
        self._ttl = ttl_s
        self._elected = asyncio.Event()
        self._deposed = asyncio.Event()  # set whenever not leading
        self._deposed.set()
        self._key: str | None = None
        self._key_revision = 0
        self._session: Session | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self._elected.is_set()

    def fence(self) -> Compare:
        """A compare that holds only while this candidate still leads (its key unchanged)."""
        if not self.leading or self._key is None:
            raise ConflictError(f"not the {self._role} leader")
        return Compare(self._key, self._key_revision)

    async def wait_elected(self) -> None:
        await self._elected.wait()

    async def wait_deposed(self) -> None:
        """Return once this candidate does not lead (at once if it does not now)."""
        await self._deposed.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._campaign(), name=f"leader-{self._role}")

    async def stop(self) -> None:
        """Resign: stop campaigning and give the role up at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._elected.clear()
        self._deposed.set()

    async def _campaign(self) -> None:
        failures = 0
        while True:
            try:
                await self._term()
            except (ConflictError, NotFoundError) as err:  # our key went before we led
                log.info("campaign for %s starts again: %s", self._role, err.message)
            except StoreUnavailableError as err:  # etcd out of reach: campaign once it is back
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning("campaign for %s: %s; again in %.1f s", self._role, err.message, delay)
                await asyncio.sleep(delay)  # a retry timer, not synchronisation
                continue
            except VirtfleetError as err:  # the store closed: nothing left to lead
                log.info("campaign for %s ends: %s", self._role, err.message)
                return
            failures = 0

    async def _term(self) -> None:
        """Queue, lead until our key goes, then step down (resigning if cancelled)."""
        name = f"leader-{self._role}-{self._candidate}"  # a restart resigns at once
        self._session = Session(self._store, self._ttl, name)
        claims = Claims(self._store, self._session, "leader", self._candidate)
        try:
            key = await claims.ask(self._role)
            await claims.wait(key)
            kv = await self._store.get(key)
            if kv is None:
                raise ConflictError("leader key expired on election")
            self._key, self._key_revision = key, kv.mod_revision
            self._deposed.clear()
            self._elected.set()
            log.info("%s leads %s", self._candidate, self._role)
            await gone(self._store, key, kv.mod_revision)
            log.warning("%s lost the %s lead (lease expired)", self._candidate, self._role)
        finally:
            self._elected.clear()
            self._deposed.set()
            self._key = None
            await self._session.close()
