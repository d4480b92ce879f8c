"""The optional guest quiescing hook used around snapshots and backups.

A ``Quiescer`` freezes a guest's filesystems (e.g. via the QEMU guest agent's
``guest-fsfreeze-freeze``) so a snapshot or backup is application-consistent.
The default ``NoQuiesce`` does nothing (crash-consistent); ``AgentQuiescer`` uses
the guest agent when the guest has one. Must not do anything but freeze and thaw.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from virtfleet.errors import VirtfleetError
from virtfleet.host.guest import GuestAgents

log = logging.getLogger(__name__)


class Quiescer(Protocol):
    async def freeze(self, name: str) -> bool:
        """Freeze ``name``'s filesystems; False if the guest cannot (no agent): crash-consistent."""
        ...

    async def thaw(self, name: str) -> None:
        """Thaw after ``freeze`` returned True; must be safe to call on an unfrozen guest."""
        ...


class NoQuiesce:
    async def freeze(self, name: str) -> bool:
        return False

    async def thaw(self, name: str) -> None:
        return None


class AgentQuiescer:
    """Freezes through the QEMU guest agent when the guest has one that answers."""

    def __init__(self, agents: GuestAgents) -> None:
        self.agents = agents

    async def freeze(self, name: str) -> bool:
        try:
            qga = self.agents.agent(name)
            await qga.ping()  # a short timeout: a VM without an agent must not stall a backup
        except VirtfleetError:
            return False  # no agent channel or no answer: crash-consistent, and said so
        try:
            await self.agents.freeze(name)
        except VirtfleetError as err:
            log.warning("fs-freeze of %s failed, crash-consistent instead: %s", name, err)
            with contextlib.suppress(VirtfleetError):
                await self.agents.thaw(name)
            return False
        return True

    async def thaw(self, name: str) -> None:
        try:
            await self.agents.thaw(name)
        except VirtfleetError as err:
            log.error("fs-thaw of %s failed: %s", name, err)
            raise
