"""Durations and points in time as users type them: ``90s``, ``15m``, ``12h``, ``30d``, ``2w``;
a time is a duration ago or an ISO 8601 timestamp. Pure (the clock is a parameter).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration_s(text: str) -> float:
    """Seconds in ``text`` (a plain number is seconds); ``ValueError`` with a one-line reason."""
    m = _DURATION.fullmatch(text.strip())
    seconds = float(m[1]) * _SECONDS[m[2].lower()] if m else 0.0
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 15m, 12h, 30d or 2w")
    return seconds


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``text`` as an aware time: a duration ago (``1h``) or ISO 8601 (UTC if no zone)."""
    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration_s(text))
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use a duration ago (1h, 2d) or ISO 8601 (2026-01-31T12:00)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
