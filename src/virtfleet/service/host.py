"""Host use cases: what this machine can do for virtualization and whether it is fit,
and the platform's hosts as the store records them.

Owns nothing but the presentation of facts and checks computed elsewhere and of the
host records (``state.hosts``; each host's daemon writes its own). Must not probe the
host itself: the composition root passes the probed ``HostFacts`` and the ``check``
callable (``virtfleet.host.facts.host_check``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from virtfleet.errors import NotFoundError
from virtfleet.model.host import Check, HostFacts, HostRecord
from virtfleet.state.hosts import HostRepo
from virtfleet.state.store import StateStore

HostCheck = Callable[[HostFacts], Sequence[Check]]


class HostService:
    def __init__(
        self, facts: HostFacts, check: HostCheck | None = None, store: StateStore | None = None
    ) -> None:
        self._facts = facts
        self._check = check
        self._hosts = HostRepo(store) if store is not None else None

    @property
    def facts(self) -> HostFacts:
        return self._facts

    def check(self) -> list[Check]:
        """The host's fitness checks (none when no check was wired in)."""
        return list(self._check(self._facts)) if self._check is not None else []

    async def hosts(self) -> list[HostRecord]:
        """Every host the store knows, by name; one whose lease lapsed shows ``offline``."""
        return await self._hosts.list() if self._hosts is not None else []

    async def get_host(self, id_or_name: str) -> HostRecord:
        """The host with this id (else this name); ``NotFoundError`` if none."""
        if self._hosts is None:
            raise NotFoundError(f"host {id_or_name!r} not found")
        return await self._hosts.get(id_or_name)
