"""Alert notifications: the daemon log and HTTP webhooks (JSON POST, retried).

Owns delivery only: each notification is POSTed to every configured webhook URL in
a background task, retried with exponential backoff on a connection error or a
non-2xx answer, and given up after ``attempts`` (logged). Must not decide what to
notify (service/alerts.py does) nor block the caller on a slow receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)


class WebhookNotifier:
    def __init__(
        self,
        urls: Sequence[str] = (),
        attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.urls = list(urls)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, payload: dict[str, Any]) -> None:
        """Log ``payload`` and send it to every webhook in the background."""
        log.warning(
            "alert %s: %s on %s: %s",
            payload.get("state"),
            payload.get("rule"),
            payload.get("target"),
            payload.get("message"),
        )
        for url in self.urls:
            task = asyncio.create_task(self._deliver(url, payload), name="webhook")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        delay = self.backoff_s
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(1, self.attempts + 1):
                try:
                    reply = await client.post(url, json=payload)
                    if reply.is_success:
                        self.delivered += 1
                        return
                    why = f"HTTP {reply.status_code}"
                except httpx.HTTPError as err:
                    why = f"{type(err).__name__}: {err}"
                log.info("webhook %s attempt %d/%d failed: %s", url, attempt, self.attempts, why)
                if attempt < self.attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        self.failed += 1
        log.warning("webhook %s: giving up after %d attempts", url, self.attempts)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for deliveries in flight (at shut-down), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
