"""The optional guest quiescing hook used around snapshots and backups.

A ``Quiescer`` freezes a guest's filesystems (e.g. via the QEMU guest agent's
``guest-fsfreeze-freeze``) so a snapshot or backup is application-consistent.
The default ``NoQuiesce`` does nothing (crash-consistent). Wire a real one in
the composition root. Must not do anything but freeze and thaw.
"""

from __future__ import annotations

from typing import Protocol


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
