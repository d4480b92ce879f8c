"""Console access: an instance's serial console and log, its VNC socket and screenshots.

Owns the ``ConsoleAccess`` protocol (implemented by the host agent, which knows
the runtime directories and the driver), reading the tail of a serial log and
``ConsoleTickets``: the short-lived, single-use tickets that open a VNC
websocket (browsers cannot send headers on websockets). Must not open the
console sockets itself: bridging bytes is the API's websocket's job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from virtfleet.errors import ConflictError, ForbiddenError
from virtfleet.model.auth import Principal
from virtfleet.model.console import ConsoleTicket

MAX_TAIL_BYTES = 4 * 1024 * 1024
TICKET_TTL_S = 30


class ConsoleAccess(Protocol):
    def socket_path(self, name: str) -> Path | None:
        """The serial console's Unix socket of a running instance, else None."""
        ...

    def log_path(self, name: str) -> Path | None:
        """The instance's serial log file, else None."""
        ...

    def vnc_socket(self, name: str) -> Path | None:
        """The VNC server's Unix socket of a running or paused instance, else None."""
        ...

    async def screenshot(self, name: str) -> bytes:
        """The instance's screen as PNG; ``InvalidStateError`` unless running or paused."""
        ...


class NoConsole:
    """A ``ConsoleAccess`` for hosts without an agent: no console, no log."""

    def socket_path(self, name: str) -> Path | None:
        return None

    def log_path(self, name: str) -> Path | None:
        return None

    def vnc_socket(self, name: str) -> Path | None:
        return None

    async def screenshot(self, name: str) -> bytes:
        raise ConflictError(f"instance {name!r} has no screen on this host")


@dataclass(frozen=True)
class _Issued:
    instance: str
    principal: Principal
    expires_at: float


class ConsoleTickets:
    """In-memory single-use tickets, each bound to one instance and the principal it was
    issued to, valid for ``ttl_s``. Lost on restart, which only costs a new ticket."""

    def __init__(self, ttl_s: int = TICKET_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.clock = clock
        self._issued: dict[str, _Issued] = {}

    def issue(self, instance: str, principal: Principal) -> ConsoleTicket:
        """A new ticket for ``principal`` to open ``instance``'s graphical console once."""
        now = self.clock()
        self._issued = {k: v for k, v in self._issued.items() if v.expires_at > now}
        ticket = secrets.token_urlsafe(32)
        self._issued[ticket] = _Issued(instance, principal, now + self.ttl_s)
        return ConsoleTicket(ticket=ticket, expires_in_s=self.ttl_s)

    def redeem(self, ticket: str, instance: str) -> Principal:
        """Consume ``ticket`` for ``instance``: its principal, or ``ForbiddenError`` if it is
        unknown, used, expired or for another instance (it is spent either way)."""
        issued = self._issued.pop(ticket, None)
        if issued is None:
            raise ForbiddenError("invalid console ticket (unknown or already used)")
        if issued.expires_at <= self.clock():
            raise ForbiddenError("console ticket expired; request a new one")
        if issued.instance != instance:
            raise ForbiddenError(f"console ticket is not for instance {instance!r}")
        return issued.principal


async def read_log_tail(path: Path | None, tail_bytes: int = 64 * 1024) -> str:
    """The last ``tail_bytes`` (capped at 4 MiB) of the log at ``path``; "" if there is none."""
    if path is None:
        return ""
    return await asyncio.to_thread(_tail, path, max(0, min(tail_bytes, MAX_TAIL_BYTES)))


def _tail(path: Path, tail_bytes: int) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
