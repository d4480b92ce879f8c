"""Container-only wire data: the result of an exec, a request to change limits. Pure data."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from virtfleet.model.instance import MAX_VCPUS, MIN_MEMORY_MIB, Strict


class ExecOutput(BaseModel):
    exit_code: int
    stdout: str
    stderr: str


class ExecRequest(Strict):
    command: Annotated[list[str], Field(min_length=1, max_length=256)]
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0


class LimitsChange(Strict):
    """Fields to change (others stay); ``pids_max`` null = no pids limit."""

    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)] | None = None
    pids_max: Annotated[int, Field(ge=8, le=4_194_304)] | None = None


class SnapshotRequest(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
