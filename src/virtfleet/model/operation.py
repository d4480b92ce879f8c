"""Operations: slow work (start, stop, image build, ...) with progress and a typed error."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from virtfleet.model.event import utcnow


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (OperationStatus.SUCCESS, OperationStatus.FAILURE, OperationStatus.CANCELLED)


class Operation(BaseModel):
    id: str
    kind: str
    target: str = ""
    host: str = ""  # the host whose daemon runs it ("" in records from before hosts)
    status: OperationStatus = OperationStatus.PENDING
    progress: int = 0
    message: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
