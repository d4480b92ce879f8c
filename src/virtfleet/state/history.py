"""Metrics history with rollups: bounded, per target (``host``, ``instance/NAME``).

Owns the rollup rules and the query: every recorded sample (a flat ``metric -> value``
map) is folded into one bucket per tier -- by default 10 s kept for 1 hour, 1 min kept
for a day, 10 min kept for 30 days -- as ``[sum, max, count]`` per metric, so any
coarser step can be rebuilt exactly (average = sum / count). Buckets older than their
tier's retention are pruned, so the size is bounded by
``targets x sum(retention / step)`` rows whatever the uptime.

Storage is a ``HistoryBackend``: ``MemoryHistoryBackend`` here (with the memory store)
or ``SQLiteHistoryBackend`` (state/history_sqlite.py: a table in the embedded store's
file). Must not read the key-value store or know where samples come from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from virtfleet.errors import InvalidInputError
from virtfleet.model.metrics import Series

Agg = dict[str, list[float]]  # metric -> [sum, max, count]
MAX_POINTS = 2000
DEFAULT_POINTS = 120
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class Tier:
    step_s: int
    retention_s: int

    @property
    def buckets(self) -> int:
        return self.retention_s // self.step_s


DEFAULT_TIERS = (Tier(10, 3600), Tier(60, 86400), Tier(600, 30 * 86400))


class HistoryBackend(Protocol):
    def load(self, target: str, tier: int, ts: int) -> Agg | None: ...

    def save(self, rows: list[tuple[str, int, int, Agg]]) -> None:
        """Insert or replace ``(target, tier, bucket start, aggregate)`` rows at once."""
        ...

    def scan(self, target: str, tier: int, start: int, end: int) -> list[tuple[int, Agg]]:
        """Buckets of ``target`` in ``tier`` with ``start <= ts < end``, oldest first."""
        ...

    def prune(self, tier: int, before: int) -> int: ...

    def count(self) -> int: ...


class MemoryHistoryBackend:
    """Buckets in a dict: the history of a ``MemoryStore`` platform (lost on exit)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], dict[int, Agg]] = {}

    def load(self, target: str, tier: int, ts: int) -> Agg | None:
        return self._rows.get((target, tier), {}).get(ts)

    def save(self, rows: list[tuple[str, int, int, Agg]]) -> None:
        for target, tier, ts, agg in rows:
            self._rows.setdefault((target, tier), {})[ts] = agg

    def scan(self, target: str, tier: int, start: int, end: int) -> list[tuple[int, Agg]]:
        found = self._rows.get((target, tier), {})
        return sorted((ts, agg) for ts, agg in found.items() if start <= ts < end)

    def prune(self, tier: int, before: int) -> int:
        dropped = 0
        for (_, t), buckets in list(self._rows.items()):
            if t != tier:
                continue
            old = [ts for ts in buckets if ts < before]
            for ts in old:
                del buckets[ts]
            dropped += len(old)
        self._rows = {k: v for k, v in self._rows.items() if v}
        return dropped

    def count(self) -> int:
        return sum(len(v) for v in self._rows.values())


class History:
    """Records flat samples into every tier and answers range queries."""

    def __init__(
        self,
        backend: HistoryBackend,
        tiers: tuple[Tier, ...] = DEFAULT_TIERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.tiers = tiers
        self.clock = clock
        self._open: dict[tuple[str, int], tuple[int, Agg]] = {}  # current bucket per tier
        self._pruned_at = 0.0

    @property
    def max_rows_per_target(self) -> int:
        return sum(t.buckets + 1 for t in self.tiers)

    def record(self, samples: Iterable[tuple[str, float, Mapping[str, float | None]]]) -> None:
        """Fold ``(target, time, values)`` samples into every tier (None values skipped)."""
        rows: list[tuple[str, int, int, Agg]] = []
        for target, ts, values in samples:
            clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
            for index, tier in enumerate(self.tiers):
                bucket = int(ts) // tier.step_s * tier.step_s
                agg = self._bucket(target, index, bucket)
                _fold(agg, clean)
                rows.append((target, index, bucket, agg))
        if rows:
            self.backend.save(rows)
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self.prune(now)

    def _bucket(self, target: str, tier: int, bucket: int) -> Agg:
        held = self._open.get((target, tier))
        if held is not None and held[0] == bucket:
            return held[1]
        agg = self.backend.load(target, tier, bucket) or {}  # after a restart: keep folding
        self._open[(target, tier)] = (bucket, agg)
        return agg

    def prune(self, now: float | None = None) -> int:
        """Drop buckets past their tier's retention; return how many went."""
        now = self.clock() if now is None else now
        self._pruned_at = now
        dropped = 0
        for index, tier in enumerate(self.tiers):
            dropped += self.backend.prune(index, int(now) - tier.retention_s)
        oldest = int(now) - self.tiers[-1].retention_s
        self._open = {k: v for k, v in self._open.items() if v[0] >= oldest}
        return dropped

    def query(self, target: str, range_s: int, step_s: int | None = None) -> Series:
        """``[time, avg, max]`` per metric over the last ``range_s`` at ``step_s`` (rounded
        to the stored tier's step; None: about 120 points)."""
        longest = self.tiers[-1].retention_s
        if not 0 < range_s <= longest:
            raise InvalidInputError(f"range must be 1 s .. {longest} s, got {range_s} s")
        if step_s is not None and step_s <= 0:
            raise InvalidInputError(f"step must be > 0 s, got {step_s} s")
        wanted = step_s if step_s is not None else max(1, range_s // DEFAULT_POINTS)
        index, tier = self._tier_for(range_s, wanted)
        step = max(tier.step_s, math.ceil(wanted / tier.step_s) * tier.step_s)
        if range_s / step > MAX_POINTS:
            raise InvalidInputError(
                f"{range_s} s at a {step} s step is over {MAX_POINTS} points; use a larger step"
            )
        now = int(self.clock())
        start = (now - range_s) // step * step
        rows = self.backend.scan(target, index, start, now + tier.step_s)
        return Series(
            target=target,
            range_s=range_s,
            step_s=step,
            tier_step_s=tier.step_s,
            points=_rebucket(rows, step),
        )

    def _tier_for(self, range_s: int, step_s: int) -> tuple[int, Tier]:
        """The coarsest tier not coarser than ``step_s`` among those that cover the range."""
        covering = [(i, t) for i, t in enumerate(self.tiers) if t.retention_s >= range_s]
        fine_enough = [(i, t) for i, t in covering if t.step_s <= step_s]
        return fine_enough[-1] if fine_enough else covering[0]


def _fold(agg: Agg, values: Mapping[str, float]) -> None:
    for metric, value in values.items():
        held = agg.get(metric)
        if held is None:
            agg[metric] = [value, value, 1.0]
        else:
            held[0] += value
            held[1] = max(held[1], value)
            held[2] += 1.0


def _rebucket(
    rows: list[tuple[int, Agg]], step: int
) -> dict[str, list[tuple[float, float, float]]]:
    merged: dict[str, dict[int, list[float]]] = {}
    for ts, agg in rows:
        bucket = ts // step * step
        for metric, (total, peak, count) in agg.items():
            held = merged.setdefault(metric, {}).setdefault(bucket, [0.0, -math.inf, 0.0])
            held[0] += total
            held[1] = max(held[1], peak)
            held[2] += count
    return {
        metric: [
            (float(ts), round(s / c, 4), round(p, 4)) for ts, (s, p, c) in sorted(buckets.items())
        ]
        for metric, buckets in sorted(merged.items())
    }
