"""Events: lifecycle changes and operation progress, as users see them. Pure data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """``kind`` is dotted: ``instance.started``, ``instance.crashed``, ``operation.progress``."""

    kind: str
    target: str = ""
    message: str = ""
    time: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)
    revision: int | None = None
