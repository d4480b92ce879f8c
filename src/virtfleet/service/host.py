"""Host use cases: what this machine can do for virtualization and whether it is fit.

Owns nothing but the presentation of facts probed elsewhere. Must not probe the
host itself (that is ``virtfleet.host.facts``, wired in by the composition root
as the ``check`` callable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from virtfleet.model.host import HostFacts

HostCheck = Callable[[HostFacts], Sequence[BaseModel | dict[str, Any]]]


class HostService:
    def __init__(self, facts: HostFacts, check: HostCheck | None = None) -> None:
        self._facts = facts
        self._check = check

    @property
    def facts(self) -> HostFacts:
        return self._facts

    def check(self) -> list[dict[str, Any]]:
        """The host checks (name, ok/warn/fail, advice, ...) as plain JSON-able dicts."""
        if self._check is None:
            return []
        return [
            item.model_dump(mode="json") if isinstance(item, BaseModel) else dict(item)
            for item in self._check(self._facts)
        ]
