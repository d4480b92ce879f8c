"""The host's boot record: which kernel boot the daemon last saw, and what it started.

Pure data; ``service.boot`` writes it, ``host boot-report`` shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class BootEntry(BaseModel):
    """One instance the boot sequence started (or resumed from saved memory)."""

    name: str
    kind: str
    order: int  # its start_order group
    action: Literal["start", "resume"] = "start"
    outcome: Literal["started", "failed"] = "started"
    at_s: float = 0.0  # when its start was asked for, seconds after the sequence began
    took_s: float = 0.0  # until it ran (or failed)
    delay_s: float = 0.0  # the wait after its group, before the next group
    agent_ready_s: float | None = None  # when its guest agent answered (if it was asked)
    error: str | None = None
    began: float = Field(default=0.0, exclude=True)  # the sequence's clock at its start


class BootReport(BaseModel):
    """The last daemon start: the boot id, whether it was a new host boot and, if it was,
    what the boot sequence started, in order, and what it left stopped."""

    boot_id: str
    new_boot: bool = False
    detected_at: datetime
    finished_at: datetime | None = None  # None while the sequence runs (or none ran)
    entries: list[BootEntry] = Field(default_factory=list)
    left_stopped: list[str] = Field(default_factory=list)  # were running, no autostart
