"""Host use cases: what this machine can do for virtualization and whether it is fit.

Owns nothing but the presentation of facts and checks computed elsewhere. Must
not probe the host itself: the composition root passes the probed ``HostFacts``
and the ``check`` callable (``virtfleet.host.facts.host_check``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from virtfleet.model.host import Check, HostFacts

HostCheck = Callable[[HostFacts], Sequence[Check]]


class HostService:
    def __init__(self, facts: HostFacts, check: HostCheck | None = None) -> None:
        self._facts = facts
        self._check = check

    @property
    def facts(self) -> HostFacts:
        return self._facts

    def check(self) -> list[Check]:
        """The host's fitness checks (none when no check was wired in)."""
        return list(self._check(self._facts)) if self._check is not None else []
