"""Metrics use cases: recording collection rounds into history, and reading them back.

Owns the history sink (``record``: one collection round -> ``History``), the
``range``/``step`` vocabulary of the API (``90s``, ``15m``, ``1h``, ``7d`` or plain
seconds), per-instance and host queries, the latest samples (``top``, ``/metrics``)
and the utilization report (service/report.py). Must not sample the host: the
collector (host/collector.py) does and hands rounds over.
"""

from __future__ import annotations

import re
from typing import Protocol

from virtfleet.errors import InvalidInputError, NotFoundError
from virtfleet.model.host import HostFacts
from virtfleet.model.metrics import (
    HostMetrics,
    HostSample,
    InstanceMetrics,
    InstanceSample,
    Series,
    UtilizationReport,
)
from virtfleet.service.report import build_report
from virtfleet.state.history import History
from virtfleet.state.repos import InstanceRepo

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Latest(Protocol):
    """Where the newest samples are (the collector)."""

    latest: dict[str, InstanceSample]
    host_latest: HostSample | None
    rounds: int


def parse_duration(text: str, what: str) -> int:
    """``"15m"`` -> 900; an ``InvalidInputError`` naming ``what`` for anything else."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInputError(f"{what} must look like 90s, 15m, 1h or 7d, not {text[:40]!r}")
    seconds = round(float(match.group(1)) * _UNIT_S[match.group(2) or "s"])
    if seconds <= 0:
        raise InvalidInputError(f"{what} must be above 0 s, not {text[:40]!r}")
    return seconds


class MetricsService:
    def __init__(
        self,
        source: Latest,
        history: History,
        repo: InstanceRepo,
        facts: HostFacts,
        scrape_from_loopback: bool = False,
    ) -> None:
        self.source = source
        self.history = history
        self.repo = repo
        self.facts = facts
        self.scrape_from_loopback = (
            scrape_from_loopback  # /metrics without credentials from 127.0.0.1/::1
        )

    async def record(self, host: HostSample, samples: list[InstanceSample]) -> None:
        """Collector sink: fold one round into the history."""
        rows = [("host", host.time, host.history_values())]
        rows += [(f"instance/{s.name}", s.time, s.history_values()) for s in samples]
        self.history.record(rows)

    async def instance(
        self, name: str, range_: str = "1h", step: str | None = None
    ) -> InstanceMetrics:
        if await self.repo.find(name) is None:
            raise NotFoundError(f"instance {name!r} not found", name=name)
        series = self._query(f"instance/{name}", range_, step)
        return InstanceMetrics(latest=self.source.latest.get(name), history=series)

    def host(self, range_: str = "1h", step: str | None = None) -> HostMetrics:
        return HostMetrics(
            latest=self.source.host_latest, history=self._query("host", range_, step)
        )

    def _query(self, target: str, range_: str, step: str | None) -> Series:
        range_s = parse_duration(range_, "range")
        step_s = parse_duration(step, "step") if step else None
        return self.history.query(target, range_s, step_s)

    def rounds(self) -> int:
        return self.source.rounds

    def latest(self) -> tuple[HostSample | None, list[InstanceSample]]:
        return self.source.host_latest, sorted(self.source.latest.values(), key=lambda s: s.name)

    async def report(self, window: str = "1h") -> UtilizationReport:
        window_s = parse_duration(window, "window")
        records = await self.repo.list()
        return build_report(self.history, self.facts, records, window_s)
