"""Audit records: who asked for which change, from where, and what came of it. Pure data.

Owns the shape of one ``AuditEntry`` and of a query over them (``AuditQuery``).
Must not hold secrets: the summary is built (and redacted) before an entry is made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from virtfleet.model.event import utcnow


class AuditEntry(BaseModel):
    """One mutating request: ``actor`` is a username, ``root@local`` or ``anonymous``;
    ``source`` an address or ``unix``; ``summary`` the request without secrets."""

    id: str = ""
    time: datetime = Field(default_factory=utcnow)
    actor: str
    role: str | None = None
    via: str | None = None
    source: str
    method: str
    path: str
    summary: dict[str, Any] = Field(default_factory=dict)
    status: int
    duration_ms: float = 0.0


class AuditQuery(BaseModel):
    """Filters of an audit query; every given one must match. Newest entries first."""

    actor: str | None = None
    method: str | None = None
    path_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: int | None = None
    limit: int = 100

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is UTC (entries are stamped in UTC)."""
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    def matches(self, entry: AuditEntry) -> bool:
        return (
            (self.actor is None or entry.actor == self.actor)
            and (self.method is None or entry.method == self.method.upper())
            and (self.path_prefix is None or entry.path.startswith(self.path_prefix))
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time < self.until)
            and (self.status is None or entry.status == self.status)
        )
