"""A qemu-guest-agent client over the VM's virtio-serial chardev (a Unix socket on the host).

Owns the QGA wire protocol: one JSON command per line; every exchange starts with
``guest-sync-delimited`` (the agent answers with a 0xFF byte then the echoed id, so
stale replies from an earlier, timed-out exchange are skipped), see QEMU's
qga/qapi-schema.json. Must not decide policy (when to freeze, when to fall back
to ACPI): callers do. Each call opens its own connection (the chardev serves one
client at a time) and raises ``GuestAgentError`` on timeout or an agent error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

from virtfleet.errors import GuestAgentError

DEFAULT_TIMEOUT_S = 5.0
FREEZE_TIMEOUT_S = 60.0  # fsfreeze syncs every filesystem first
_LIMIT = 1 << 20


class GuestAgent:
    """Commands of the agent behind ``socket``; ``timeout_s`` bounds each exchange."""

    def __init__(self, socket: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket = socket
        self.timeout_s = timeout_s

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None,
        timeout_s: float | None = None, reply: bool = True,
    ) -> Any:  # fmt: skip
        """Run ``command``; its ``return`` value (None when ``reply`` is False)."""
        try:
            return await asyncio.wait_for(
                self._exchange(command, arguments, reply), timeout_s or self.timeout_s
            )
        except TimeoutError as err:
            raise GuestAgentError(f"guest agent did not answer {command} in time") from err
        except OSError as err:
            raise GuestAgentError(f"guest agent channel unavailable: {err}") from err

    async def _exchange(self, command: str, arguments: dict[str, Any] | None, reply: bool) -> Any:
        reader, writer = await asyncio.open_unix_connection(str(self.socket), limit=_LIMIT)
        try:
            await self._sync(reader, writer)
            msg: dict[str, Any] = {"execute": command}
            if arguments:
                msg["arguments"] = arguments
            writer.write(json.dumps(msg).encode() + b"\n")
            await writer.drain()
            if not reply:
                return None
            return _result(command, await _read_json(reader))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _sync(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token = secrets.randbelow(1 << 31)
        msg = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        # A leading 0xFF makes the agent drop any half-received input.
        writer.write(b"\xff" + json.dumps(msg).encode() + b"\n")
        await writer.drain()
        while True:
            data = await _read_json(reader)
            if data.get("return") == token:
                return

    async def ping(self) -> None:
        await self.execute("guest-ping")

    async def osinfo(self) -> dict[str, Any]:
        return dict(await self.execute("guest-get-osinfo"))

    async def hostname(self) -> str:
        return str((await self.execute("guest-get-host-name")).get("host-name", ""))

    async def interfaces(self) -> list[dict[str, Any]]:
        return list(await self.execute("guest-network-get-interfaces"))

    async def shutdown(self, mode: str = "powerdown", grace_s: float = 3.0) -> None:
        """Ask the guest OS to shut down.

        The agent sends no reply on success, only an error (e.g. its shutdown command
        failed): silence for ``grace_s`` (or the channel closing) counts as success.
        """
        try:
            await self.execute("guest-shutdown", {"mode": mode}, timeout_s=grace_s)
        except GuestAgentError as err:
            if err.details.get("refused"):  # an answer: the guest did not shut down
                raise

    async def fsfreeze(self) -> int:
        """Freeze every guest filesystem; the number frozen."""
        return int(await self.execute("guest-fsfreeze-freeze", timeout_s=FREEZE_TIMEOUT_S))

    async def fsthaw(self) -> int:
        """Thaw every guest filesystem; the number thawed."""
        return int(await self.execute("guest-fsfreeze-thaw", timeout_s=FREEZE_TIMEOUT_S))

    async def fsfreeze_status(self) -> str:
        """ "frozen" or "thawed"."""
        return str(await self.execute("guest-fsfreeze-status"))


async def _read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        if not line:
            raise GuestAgentError("guest agent channel closed")
        text = line.lstrip(b"\xff").strip()
        if not text:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            if isinstance(data, dict):
                return data


def _result(command: str, data: dict[str, Any]) -> Any:
    if "error" in data:
        err = data["error"]
        desc = err.get("desc", err) if isinstance(err, dict) else err
        raise GuestAgentError(f"guest agent refused {command}: {desc}", refused=True)
    return data.get("return")
