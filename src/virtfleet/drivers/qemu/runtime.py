"""The versioned runtime record: what was launched for one VM, saved beside it.

It lets a restarted agent re-attach to a QEMU that outlived it (same PID, same
sockets) and later hotplug against the real device layout. Reading an older
record version upgrades it here; a record we cannot read is reported, never
guessed at. Owns no processes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import psutil
from pydantic import BaseModel, Field, ValidationError

from virtfleet.errors import DriverError

RECORD_VERSION = 1


class RuntimeRecord(BaseModel):
    version: int = RECORD_VERSION
    name: str
    pid: int
    pid_create_time: float
    argv: list[str]
    qmp_socket: str
    serial_socket: str
    serial_log: str
    vnc_socket: str = ""  # "" in records written before VMs had a display
    qemu_version: str
    accel: str
    accel_reason: str = ""
    machine: str
    device_model: str
    disks: dict[str, str] = Field(default_factory=dict)
    uid: int | None = None  # the VM's own uid from the pool; None: a shared user or root
    swtpm_pid: int | None = None  # the VM's TPM emulator (it ends with QEMU's connection)
    vcpus_hotplugged: int = 0  # vCPU creations since launch (TCG never frees their contexts)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def process_alive(self) -> bool:
        """True if our QEMU still runs: same PID *and* same start time (no PID reuse)."""
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.pid_create_time) < 0.5
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def save(record: RuntimeRecord, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous record intact."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.model_dump_json(indent=1))
    os.replace(tmp, path)


def load(path: Path) -> RuntimeRecord | None:
    """The record at ``path``, None if absent; DriverError if unreadable or too new."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = RuntimeRecord.model_validate_json(text)
    except ValidationError as err:
        raise DriverError(f"unreadable runtime record {path}: {err.errors()[0]['msg']}") from err
    if record.version > RECORD_VERSION:
        raise DriverError(f"runtime record {path} has version {record.version}, newer than ours")
    return record
