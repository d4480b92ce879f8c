"""Guest agents of this host's VMs, by instance name: info for ``vm show`` and fs-freeze/thaw.

Owns finding a VM's agent socket (``<run>/<name>/qga.sock``) and summarising what
the agent says. Must not decide when to freeze: snapshot/backup code does, through
``freeze``/``thaw`` or the ``frozen`` context manager.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from virtfleet.drivers.qemu.config import RunPaths
from virtfleet.drivers.qemu.qga import GuestAgent
from virtfleet.errors import InvalidStateError, VirtfleetError
from virtfleet.model.guest import GuestInfo, GuestInterface


class GuestAgents:
    def __init__(self, run_root: Path, timeout_s: float = 5.0) -> None:
        self.run_root = run_root
        self.timeout_s = timeout_s

    def agent(self, name: str) -> GuestAgent:
        """The agent of running VM ``name``; ``InvalidStateError`` if it has no channel now."""
        socket = RunPaths(self.run_root / name).qga
        if not socket.exists():
            raise InvalidStateError("without a guest agent channel", "running with guest_agent")
        return GuestAgent(socket, self.timeout_s)

    async def info(self, name: str) -> GuestInfo:
        """What the agent reports; ``agent=False`` and ``error`` when it does not answer."""
        try:
            qga = self.agent(name)
            await qga.ping()
            osinfo = await qga.osinfo()
            hostname = await qga.hostname()
            nics = await qga.interfaces()
        except VirtfleetError as err:
            return GuestInfo(agent=False, error=err.message)
        return GuestInfo(
            agent=True,
            os_name=str(osinfo.get("pretty-name") or osinfo.get("name", "")),
            os_version=str(osinfo.get("version", "")),
            kernel=str(osinfo.get("kernel-release", "")),
            hostname=hostname,
            interfaces=[_interface(n) for n in nics],
        )

    async def freeze(self, name: str) -> int:
        """Freeze the guest's filesystems (``guest-fsfreeze-freeze``); how many were frozen.

        Raises ``InvalidStateError`` (no agent channel) or ``GuestAgentError``.
        """
        return await self.agent(name).fsfreeze()

    async def thaw(self, name: str) -> int:
        """Thaw the guest's filesystems; how many were thawed. Safe to call when not frozen."""
        return await self.agent(name).fsthaw()

    @contextlib.asynccontextmanager
    async def frozen(self, name: str) -> AsyncIterator[int]:
        """Filesystems frozen for the body (yields how many); always thawed after it.

        A failed thaw raises ``GuestAgentError`` (a guest left frozen must not go unnoticed).
        """
        count = await self.freeze(name)
        try:
            yield count
        finally:
            await self.thaw(name)


def _interface(data: dict[str, Any]) -> GuestInterface:
    addresses = []
    for addr in data.get("ip-addresses", []) or []:
        with contextlib.suppress(ValueError, KeyError):
            ip = ipaddress.ip_address(addr["ip-address"])
            addresses.append(f"{ip}/{int(addr.get('prefix', 0))}")
    return GuestInterface(
        name=str(data.get("name", "")),
        mac=str(data.get("hardware-address", "")),
        addresses=addresses,
    )
