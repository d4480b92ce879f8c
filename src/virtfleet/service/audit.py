"""Audit use cases: record a change request, query the log, and strip secrets from summaries.

Owns what a request summary may contain: ``summarize`` keeps the query and the
JSON body with every field whose name mentions a password, token, secret or
authorization replaced by ``***``, and bounds its size; and how much of an anonymous
flood is kept (``AnonymousThrottle``: a source without credentials gets
``ANONYMOUS_PER_MINUTE`` entries a minute, the rest are counted and the count is
recorded with its next entry). Must not know HTTP
beyond those raw parts (the API's audit middleware hands them in) nor decide
who may read the log (the API's role guard does).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.model.auth import ANONYMOUS
from virtfleet.state.audit import AuditLog

MASK = "***"
SECRET_WORDS = ("password", "token", "secret", "authorization", "cookie")
MAX_SUMMARY_CHARS = 4096
MAX_STRING_CHARS = 256
MAX_LIMIT = 1000
ANONYMOUS_PER_MINUTE = 60  # full entries per source without credentials, per minute
MAX_SOURCES = 10_000  # sources the throttle remembers (the stalest are forgotten)


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """``value`` with secret-named fields masked at any depth and long strings cut."""
    if isinstance(value, dict):
        return {str(k): MASK if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return value[:MAX_STRING_CHARS] + "..."
    return value


def summarize(query_string: str, body: bytes, content_type: str, complete: bool) -> dict[str, Any]:
    """A secret-free summary of a request's query and body (``complete``: body not cut)."""
    summary: dict[str, Any] = {}
    if query_string:
        summary["query"] = redact(dict(parse_qsl(query_string, keep_blank_values=True)))
    if body:
        summary.update(_body_summary(body, content_type, complete))
    if len(json.dumps(summary, default=str)) > MAX_SUMMARY_CHARS:
        summary = {"body_bytes": len(body), "note": "summary too large"}
    return summary


def _body_summary(body: bytes, content_type: str, complete: bool) -> dict[str, Any]:
    if complete and "json" in content_type.lower():
        try:
            return {"body": redact(json.loads(body))}
        except ValueError:  # malformed JSON (UnicodeDecodeError included): size only
            pass
    return {"body_bytes": len(body)}


class AnonymousThrottle:
    """At most ``per_window`` anonymous entries per source per ``window_s``: the one over
    the limit is kept marked ``throttled``, later ones only counted until the window ends;
    the next kept entry of that source says how many were left out."""

    def __init__(
        self,
        per_window: int = ANONYMOUS_PER_MINUTE,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, list[float]] = {}  # source -> [window start, kept, left out]

    def admit(self, entry: AuditEntry) -> AuditEntry | None:
        """``entry`` as it is to be kept (maybe annotated), or None to leave it out."""
        now = self.clock()
        seen = self._seen.get(entry.source)
        if seen is None or now - seen[0] >= self.window_s:
            left_out = int(seen[2]) if seen else 0
            self._remember(entry.source, [now, 1, 0])
            return _annotated(entry, suppressed=left_out) if left_out else entry
        seen[1] += 1
        if seen[1] <= self.per_window:
            return entry
        if seen[1] == self.per_window + 1:
            return _annotated(entry, throttled=True)
        seen[2] += 1
        return None

    def _remember(self, source: str, state: list[float]) -> None:
        self._seen.pop(source, None)
        self._seen[source] = state  # insertion order: the stalest first
        while len(self._seen) > MAX_SOURCES:
            del self._seen[next(iter(self._seen))]


def _annotated(entry: AuditEntry, **notes: Any) -> AuditEntry:
    return entry.model_copy(update={"summary": {**entry.summary, **notes}})


class AuditService:
    def __init__(self, log: AuditLog, throttle: AnonymousThrottle | None = None) -> None:
        self.log = log
        self.throttle = throttle or AnonymousThrottle()

    async def record(self, entry: AuditEntry) -> AuditEntry | None:
        """Append ``entry`` (its summary must already be redacted); an anonymous one only
        as far as ``throttle`` admits it (None when it was only counted)."""
        if entry.actor == ANONYMOUS:
            admitted = self.throttle.admit(entry)
            if admitted is None:
                return None
            entry = admitted
        return await self.log.append(entry)

    async def query(self, query: AuditQuery) -> builtins.list[AuditEntry]:
        """Entries matching ``query``, newest first; ``limit`` is capped at ``MAX_LIMIT``."""
        capped = query.model_copy(update={"limit": max(1, min(query.limit, MAX_LIMIT))})
        return await self.log.query(capped)
