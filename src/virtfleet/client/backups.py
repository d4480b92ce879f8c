"""Calls of the snapshot and backup endpoints, for ``Client.call`` / ``AsyncClient.call``.

Owns the wire contract of ``/1.0/instances/{name}/snapshots``, ``/1.0/backups``
and ``/1.0/backup-schedules`` as the client sees it. Names and ids are checked
here so a bad one never becomes a different URL. Must not do I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from virtfleet.client.calls import Call, inst, many, one, segment
from virtfleet.client.errors import ApiError

if TYPE_CHECKING:
    from virtfleet.model.backup import BackupInfo, Schedule, Snapshot
    from virtfleet.model.operation import Operation

_BACKUP_ID = re.compile(r"[0-9]{8}t[0-9]{6}z-[0-9a-f]{6}")


def _bk(backup_id: str) -> str:
    if not _BACKUP_ID.fullmatch(backup_id):
        raise ApiError("invalid_input", f"invalid backup id {backup_id[:80]!r}", 400)
    return f"/1.0/backups/{quote(backup_id, safe='')}"


def _snap(vm: str, snap: str) -> str:
    return f"{inst(vm)}/snapshots/{segment(snap, 'snapshot name')}"


def list_snapshots(vm: str) -> Call[list[Snapshot]]:
    return Call("GET", f"{inst(vm)}/snapshots", many("model.backup:Snapshot"))


def create_snapshot(vm: str, snap: str, memory: bool = False) -> Call[Operation]:
    segment(snap, "snapshot name")
    body = {"name": snap, "memory": memory}
    return Call("POST", f"{inst(vm)}/snapshots", one("model.operation:Operation"), json=body)


def revert_snapshot(vm: str, snap: str) -> Call[Operation]:
    return Call("POST", f"{_snap(vm, snap)}/revert", one("model.operation:Operation"))


def delete_snapshot(vm: str, snap: str) -> Call[Operation]:
    return Call("DELETE", _snap(vm, snap), one("model.operation:Operation"))


def list_backups(instance: str | None = None) -> Call[list[BackupInfo]]:
    params = {"instance": segment(instance, "instance name")} if instance else {}
    return Call("GET", "/1.0/backups", many("model.backup:BackupInfo"), params=params)


def get_backup(backup_id: str) -> Call[BackupInfo]:
    return Call("GET", _bk(backup_id), one("model.backup:BackupInfo"))


def create_backup(instance: str, full: bool = False) -> Call[Operation]:
    segment(instance, "instance name")
    return Call(
        "POST",
        "/1.0/backups",
        one("model.operation:Operation"),
        json={"instance": instance, "full": full},
    )


def verify_backups() -> Call[Operation]:
    return Call("POST", "/1.0/backups/verify", one("model.operation:Operation"))


def prune_backups(instance: str | None, dry_run: bool = False, **keep: int) -> Call[Operation]:
    body: dict[str, Any] = {"instance": instance, "dry_run": dry_run}
    body.update({f"keep_{k}": v for k, v in keep.items()})
    return Call("POST", "/1.0/backups/prune", one("model.operation:Operation"), json=body)


def delete_backup(backup_id: str) -> Call[Operation]:
    return Call("DELETE", _bk(backup_id), one("model.operation:Operation"))


def restore_backup(backup_id: str, target: str | None, start: bool = False) -> Call[Operation]:
    if target is not None:
        segment(target, "instance name")
    body = {"target": target, "start": start}
    return Call("POST", f"{_bk(backup_id)}/restore", one("model.operation:Operation"), json=body)


def list_schedules() -> Call[list[Schedule]]:
    return Call("GET", "/1.0/backup-schedules", many("model.backup:Schedule"))


def put_schedule(name: str, instance: str, cron: str, **keep: int) -> Call[Schedule]:
    body: dict[str, Any] = {"instance": instance, "cron": cron}
    body.update({f"keep_{k}": v for k, v in keep.items()})
    path = f"/1.0/backup-schedules/{segment(name, 'schedule name')}"
    return Call("PUT", path, one("model.backup:Schedule"), json=body)


def delete_schedule(name: str) -> Call[dict[str, Any]]:
    path = f"/1.0/backup-schedules/{segment(name, 'schedule name')}"
    return Call("DELETE", path, lambda d: dict(d))
