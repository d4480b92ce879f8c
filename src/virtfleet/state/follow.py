"""Watches that outlive compactions and store outages: what every long-lived consumer of
``StateStore.watch`` (the agent, event streams, alerts, the capacity tally, leadership)
uses instead of a bare watch.

A watch on etcd ends with ``ConflictError`` when the revision it needs was compacted
(or, in-process, when its consumer fell behind) and with ``StoreUnavailableError`` when
etcd went away or lost its leader. ``follow`` then re-reads (a "resync": by default the
keys under the prefix changed since the last event, replayed as puts; deletes in the gap
are the consumer's own resync to find), retrying with back-off while the store is out of
reach, and watches again from the revision that read returned. It ends when the store
closes. Nothing here knows what the keys mean.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from virtfleet.errors import ConflictError, StoreUnavailableError
from virtfleet.state.store import StateStore, WatchEvent

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # back-off between attempts while the store is out
# (revision to watch on from, events to hand over first) after a watch ended
Resync = Callable[[int], Awaitable[tuple[int, list[WatchEvent]]]]


async def until_reachable(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()``, tried again with back-off while the store is unavailable (logged)."""
    for attempt in itertools.count():
        try:
            return await call()
        except StoreUnavailableError as err:
            delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
            log.warning("%s: %s; retrying in %.1f s", what, err.message, delay)
            await asyncio.sleep(delay)  # a retry timer, not synchronisation
    raise AssertionError("unreachable")  # pragma: no cover (itertools.count never ends)


def replay(store: StateStore, prefix: str) -> Resync:
    """The default resync: the keys under ``prefix`` changed after the last event seen,
    in commit order, as puts (a key deleted in the gap is not replayed)."""

    async def read(after: int) -> tuple[int, list[WatchEvent]]:
        found = await store.range(prefix)
        newer = sorted(
            (kv for kv in found.kvs if kv.mod_revision > after), key=lambda kv: kv.mod_revision
        )
        return found.revision, [
            WatchEvent("put", kv.key, kv.value, kv.mod_revision) for kv in newer
        ]

    return read


async def follow(
    store: StateStore,
    prefix: str,
    after: int,
    what: str,
    resync: Resync | None = None,
) -> AsyncGenerator[WatchEvent]:
    """Every change under ``prefix`` after revision ``after``, across compactions and
    outages (``resync``, default ``replay``, fills each gap); ends when the store closes."""
    reread = resync or replay(store, prefix)
    while True:
        watch = store.watch(prefix, after)
        try:
            async for event in watch:
                after = event.revision
                yield event
            return  # the store closed
        except (ConflictError, StoreUnavailableError) as err:
            log.warning("%s: watch on %s ended (%s); reading it again", what, prefix, err.message)
        finally:
            aclose = getattr(watch, "aclose", None)
            if aclose is not None:
                await aclose()
        after, missed = await until_reachable(functools.partial(reread, after), what)
        log.info("%s: following %s again from revision %d", what, prefix, after)
        for event in missed:
            yield event
