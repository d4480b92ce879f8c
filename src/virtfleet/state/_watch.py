"""Watch fan-out for the in-process stores: ``WatchHub`` and its ``Watcher`` iterators.

A store publishes the events of every committed revision to its ``WatchHub``;
the hub hands them to each open ``Watcher`` whose prefix matches. A ``Watcher``
starts with the history the store read for it and then buffers live events, so a
consumer sees history and live changes as one gap-free, duplicate-free stream.

The hub only holds watchers weakly: a watcher its consumer dropped goes away
with it. A consumer that falls more than ``MAX_PENDING`` events behind is cut
off at a revision boundary and gets a ``ConflictError`` naming the revision to
re-watch from, instead of the buffer growing without bound.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Iterable, Sequence

from virtfleet.errors import ConflictError
from virtfleet.state.store import WatchEvent

MAX_PENDING = 100_000


class Watcher:
    """Async iterator over the changes under one prefix with revision > ``after``."""

    def __init__(
        self,
        hub: WatchHub,
        prefix: str,
        after: int,
        history: Iterable[WatchEvent],
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._hub = hub
        self._prefix = prefix
        self._after = after
        self._pending: deque[WatchEvent] = deque(history)
        self._max_pending = max_pending
        self._wakeup = asyncio.Event()
        self._ended = False
        self._error: ConflictError | None = None

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stop watching now, dropping anything not yet consumed."""
        self._pending.clear()
        self.end()

    def offer(self, events: Sequence[WatchEvent]) -> None:
        """Queue the events of one committed revision that fall under this watcher's prefix."""
        if self._ended:
            return
        mine = [e for e in events if e.revision > self._after and e.key.startswith(self._prefix)]
        if not mine:
            return
        if len(self._pending) + len(mine) > self._max_pending:
            behind = mine[0].revision - 1
            self.end(ConflictError(f"watcher fell behind; re-watch after revision {behind}"))
            return
        self._pending.extend(mine)
        self._wakeup.set()

    def end(self, error: ConflictError | None = None) -> None:
        """Stop receiving; the consumer drains what is buffered, then stops (or gets ``error``)."""
        self._ended = True
        self._error = error
        self._hub.discard(self)
        self._wakeup.set()


class WatchHub:
    """The open watchers of one store, fed by ``publish`` after every commit."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()
        self._max_pending = max_pending

    def subscribe(self, prefix: str, after: int, history: Iterable[WatchEvent]) -> Watcher:
        """A watcher that yields ``history`` and then live events with revision > ``after``."""
        watcher = Watcher(self, prefix, after, history, self._max_pending)
        self._watchers.add(watcher)
        return watcher

    def publish(self, events: Sequence[WatchEvent]) -> None:
        """Deliver the events of one committed revision to every matching watcher."""
        if events:
            for watcher in list(self._watchers):
                watcher.offer(events)

    def discard(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watcher: each drains what it has buffered, then stops."""
        for watcher in list(self._watchers):
            watcher.end()
