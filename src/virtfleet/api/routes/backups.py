"""Routes of ``/1.0/backups`` and ``/1.0/backup-schedules``.

Back up (202), list, show, verify, prune, delete, restore; schedules CRUD.
Handlers only parse, call ``BackupService``/``ScheduleService`` and return.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.backup import BackupInfo, RepositoryStats, RetentionPolicy, Schedule
from virtfleet.model.instance import Strict
from virtfleet.model.names import NameStr
from virtfleet.model.operation import Operation
from virtfleet.service import Services
from virtfleet.service.backups import BackupService
from virtfleet.service.schedules import ScheduleService

router = APIRouter(prefix="/1.0", tags=["backups"], dependencies=[ANY_USER])


class CreateBackup(Strict):
    instance: NameStr
    full: bool = False  # force a full backup even when an incremental is possible


class PruneRequest(Strict):
    instance: NameStr | None = None  # None: every instance
    keep_last: int = Field(0, ge=0)
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)
    keep_monthly: int = Field(0, ge=0)
    dry_run: bool = False


class RestoreRequest(Strict):
    target: NameStr | None = None  # a new instance; None: over the original (stopped)
    start: bool = False


class PutSchedule(Strict):
    instance: NameStr
    cron: str  # five fields: minute hour day-of-month month day-of-week
    keep_last: int = Field(0, ge=0)
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)
    keep_monthly: int = Field(0, ge=0)


def _svc(services: Services) -> BackupService:
    if services.backups is None:
        raise HostError("backups are not available on this host")
    return services.backups


def _sched(services: Services) -> ScheduleService:
    if services.schedules is None:
        raise HostError("backup schedules are not available on this host")
    return services.schedules


@router.get("/backups")
async def list_backups(services: ServicesDep, instance: str | None = None) -> list[BackupInfo]:
    return await _svc(services).list(instance)


@router.post("/backups", status_code=202, dependencies=[OPERATOR])
async def create_backup(body: CreateBackup, services: ServicesDep) -> Operation:
    return await _svc(services).create(body.instance, full=body.full)


@router.post("/backups/verify", status_code=202, dependencies=[OPERATOR])
async def verify_backups(services: ServicesDep) -> Operation:
    return await _svc(services).verify()


@router.post("/backups/prune", status_code=202, dependencies=[OPERATOR])
async def prune_backups(body: PruneRequest, services: ServicesDep) -> Operation:
    policy = RetentionPolicy(
        last=body.keep_last,
        daily=body.keep_daily,
        weekly=body.keep_weekly,
        monthly=body.keep_monthly,
    )
    return await _svc(services).prune(body.instance, policy, dry_run=body.dry_run)


@router.get("/backups/repository")
async def repository_stats(services: ServicesDep) -> RepositoryStats:
    return await _svc(services).stats()


@router.get("/backups/{backup_id}")
async def get_backup(backup_id: str, services: ServicesDep) -> BackupInfo:
    return await _svc(services).get(backup_id)


@router.delete("/backups/{backup_id}", status_code=202, dependencies=[OPERATOR])
async def delete_backup(backup_id: str, services: ServicesDep) -> Operation:
    return await _svc(services).delete(backup_id)


@router.post("/backups/{backup_id}/restore", status_code=202, dependencies=[OPERATOR])
async def restore_backup(backup_id: str, body: RestoreRequest, services: ServicesDep) -> Operation:
    return await _svc(services).restore(backup_id, body.target, start=body.start)


@router.get("/backup-schedules")
async def list_schedules(services: ServicesDep) -> list[Schedule]:
    return await _sched(services).list()


class NextRuns(Strict):
    cron: str
    next_runs: list[datetime]


@router.get("/backup-schedules/next-runs")
async def next_runs(
    services: ServicesDep,
    cron: Annotated[str, Query(max_length=200)],
    count: Annotated[int, Query(ge=1, le=20)] = 5,
) -> NextRuns:
    """When a cron expression fires next (the UI's cron helper); 400 for a bad one."""
    return NextRuns(cron=cron, next_runs=_sched(services).next_runs(cron, count))


@router.put("/backup-schedules/{schedule}", dependencies=[OPERATOR])
async def put_schedule(schedule: str, body: PutSchedule, services: ServicesDep) -> Schedule:
    return await _sched(services).put(Schedule(name=schedule, **body.model_dump()))


@router.delete("/backup-schedules/{schedule}", dependencies=[OPERATOR])
async def delete_schedule(schedule: str, services: ServicesDep) -> dict[str, Any]:
    await _sched(services).delete(schedule)
    return {"name": schedule, "deleted": True}
