"""Waiting on the store: level-triggered waits built on ``StateStore.watch``, never sleep polling.

Owns the one helper that re-checks a condition after every change under a
prefix until it holds or a timeout passes. Must not interpret what it waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from virtfleet.state.store import StateStore

T = TypeVar("T")


async def wait_until(
    store: StateStore,
    prefix: str,
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    after_revision: int | None = None,
) -> T | None:
    """Return ``check()``'s first non-None answer, re-asked after each change under ``prefix``.

    The revision is taken before the first check, so no change between the first
    check and the start of the watch is missed. ``after_revision``: a revision at
    which ``check`` is known to answer None (the caller's own write): no first check,
    only the changes after it. Returns None when ``timeout_s`` passes.
    """
    rev = after_revision
    if rev is None:
        rev = await store.revision()
        found = await check()
        if found is not None:
            return found
    watch = store.watch(prefix, rev)
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            async for _ in watch:
                found = await check()
                if found is not None:
                    return found
    except TimeoutError:
        return None
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()
    return None
