"""Retention: which backups a keep-last/daily/weekly/monthly policy keeps. Pure.

Same rule as the usual backup tools: keep the newest ``last`` backups, plus the
newest backup of each of the newest ``daily`` days (``weekly`` ISO weeks,
``monthly`` months) that have a backup. A backup kept by several rules is kept once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from virtfleet.model.backup import RetentionPolicy

__all__ = ["RetentionPolicy", "select_kept"]


def _day(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


def _month(t: datetime) -> str:
    return t.strftime("%Y-%m")


def select_kept(times: Sequence[tuple[str, datetime]], policy: RetentionPolicy) -> set[str]:
    """Ids to keep from ``(id, created_at)`` pairs; an empty policy keeps everything."""
    newest_first = sorted(times, key=lambda item: item[1], reverse=True)
    if policy.empty():
        return {i for i, _ in newest_first}
    kept = {i for i, _ in newest_first[: policy.last]}
    rules: list[tuple[int, Callable[[datetime], str]]] = [
        (policy.daily, _day),
        (policy.weekly, _week),
        (policy.monthly, _month),
    ]
    for count, bucket in rules:
        seen: set[str] = set()
        for backup_id, created in newest_first:
            key = bucket(created)
            if len(seen) >= count:
                break
            if key not in seen:
                seen.add(key)
                kept.add(backup_id)
    return kept
