"""The runtime record of one container: what was started, so a restarted agent can re-attach.

Saved as ``record.json`` in the container's run directory (versioned JSON).
Pure data plus atomic save/load; no process handling.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from virtfleet.model.instance import InstanceSpec

# 2: the console keeper holds the pty master (1: a holder per container), and the init's
# pid is the runtime's to tell (``state``): the record is saved before the runtime exits.
RECORD_VERSION = 2


class ContainerRecord(BaseModel):
    version: int = RECORD_VERSION
    name: str
    runtime: str  # the runtime binary that created it (it must also delete it)
    userns_host_id: int | None = None
    spec: InstanceSpec
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def save(record: ContainerRecord, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(record.model_dump_json(indent=1))
    os.replace(tmp, path)


def load(path: Path) -> ContainerRecord | None:
    """The record at ``path``; None if absent or unreadable (treated as not running)."""
    try:
        return ContainerRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return None
