"""Console access: where an instance's serial console socket and serial log live.

Owns the ``ConsoleAccess`` protocol (implemented by the host agent, which knows
the runtime directories) and reading the tail of a serial log. Must not open
the console socket itself: bridging bytes is the API's websocket's job.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

MAX_TAIL_BYTES = 4 * 1024 * 1024


class ConsoleAccess(Protocol):
    def socket_path(self, name: str) -> Path | None:
        """The serial console's Unix socket of a running instance, else None."""
        ...

    def log_path(self, name: str) -> Path | None:
        """The instance's serial log file, else None."""
        ...


class NoConsole:
    """A ``ConsoleAccess`` for hosts without an agent: no console, no log."""

    def socket_path(self, name: str) -> Path | None:
        return None

    def log_path(self, name: str) -> Path | None:
        return None


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
