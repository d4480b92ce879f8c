"""Starting the daemon on a store that may not answer yet (an external etcd).

Owns ``Startup``: the platform's start waits for the store, retrying with back-off and
a logged status, instead of dying; the HTTP server is up meanwhile and ``StoreGate``
answers every API request 503 ``store_unavailable`` with the reason. Nothing touches
instances until the store answers: running guests (which outlive the daemon) are left
as they are, and the agent re-adopts them once it starts. A store that answers at once
(SQLite, memory, a live etcd) starts inline, before the first request, as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from virtfleet.api.errors import error_response
from virtfleet.errors import StoreUnavailableError
from virtfleet.state.follow import RETRY_S

log = logging.getLogger(__name__)
WEBSOCKET_TRY_AGAIN = 1013  # RFC 6455: try again later


class Startup:
    """Start the platform once ``probe`` (a cheap store read) answers."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        start: Callable[[], Awaitable[None]],
        store: str,
    ) -> None:
        self._probe = probe
        self._start = start
        self._store = store  # what the log says it waits for
        # Why API requests are refused (None: served; the server takes none before start).
        self.reason: str | None = None
        self.started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Start now if the store answers, else keep trying in the background."""
        try:
            await self._probe()
        except StoreUnavailableError as err:
            self._unavailable(err, RETRY_S[0])
            self._task = asyncio.create_task(self._retry(), name="daemon-start")
            return
        await self._started()

    async def close(self) -> bool:
        """Stop waiting; whether the platform had started (and so needs stopping)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.started.is_set()

    async def _retry(self) -> None:
        for attempt in itertools.count(1):
            await asyncio.sleep(RETRY_S[min(attempt - 1, len(RETRY_S) - 1)])  # back-off timer
            try:
                await self._probe()
            except StoreUnavailableError as err:
                self._unavailable(err, RETRY_S[min(attempt, len(RETRY_S) - 1)])
                continue
            log.info("state store (%s) answers: starting", self._store)
            try:
                await self._started()
            except Exception as err:  # the daemon stays up and says why (a 503, the log)
                self.reason = f"the daemon failed to start: {err}"
                log.exception("daemon start failed")
            return

    async def _started(self) -> None:
        await self._start()
        self.reason = None
        self.started.set()

    def _unavailable(self, err: StoreUnavailableError, delay: float) -> None:
        self.reason = f"waiting for the state store ({self._store}): {err.message}"
        log.warning("%s; retrying in %.1f s (guests keep running)", self.reason, delay)


class StoreGate:
    """ASGI middleware: until the platform started, API requests answer 503
    ``store_unavailable`` with the reason (the web UI's static files are still served)."""

    def __init__(self, app: ASGIApp, startup: Startup) -> None:
        self.app = app
        self.startup = startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = self.startup.reason
        if reason is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not str(scope.get("path", "")).startswith("/1.0"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send(
                {"type": "websocket.close", "code": WEBSOCKET_TRY_AGAIN, "reason": reason[:120]}
            )
            return
        err = StoreUnavailableError(reason)
        await error_response(err.code, err.message, err.status)(scope, receive, send)
