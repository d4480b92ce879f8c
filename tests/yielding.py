"""``yielding``: a store whose every call yields to the event loop first, as a store doing
real I/O does (etcd, SQLite in a thread). The in-process stores never yield, which makes
a read and a later write look atomic to concurrent tasks when nothing makes them so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from virtfleet.state.store import StateStore

METHODS = ("get", "list", "range", "count", "put", "txn", "delete", "revision", "grant_lease")


def yielding(store: StateStore) -> StateStore:
    """``store`` itself, its calls now yielding to the loop before they run."""
    for method in METHODS:
        if hasattr(store, method):  # (``range`` is newer than some stores under test)
            setattr(store, method, _yielded(getattr(store, method)))
    return store


def _yielded(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def yielded(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await call(*args, **kwargs)

    return yielded
