"""Routes of ``/1.0/instances/{name}/snapshots``: list, take, revert, delete (202 operations).

Handlers only parse, call ``SnapshotService`` and return. Must not hold rules.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.backup import Snapshot
from virtfleet.model.instance import Strict
from virtfleet.model.names import NameStr
from virtfleet.model.operation import Operation
from virtfleet.service import Services
from virtfleet.service.snapshots import SnapshotService

router = APIRouter(
    prefix="/1.0/instances/{name}/snapshots", tags=["snapshots"], dependencies=[ANY_USER]
)


class CreateSnapshot(Strict):
    name: NameStr  # checked by the service (invalid_name), as path characters must be refused
    memory: bool = False  # also RAM and device state (running VMs): revert resumes the guest


def _svc(services: Services) -> SnapshotService:
    if services.snapshots is None:
        raise HostError("snapshots are not available on this host")
    return services.snapshots


@router.get("")
async def list_snapshots(name: InstanceName, services: ServicesDep) -> list[Snapshot]:
    return await _svc(services).list(name)


@router.post("", status_code=202, dependencies=[OPERATOR])
async def create_snapshot(
    name: InstanceName, body: CreateSnapshot, services: ServicesDep
) -> Operation:
    return await _svc(services).create(name, body.name, body.memory)


@router.post("/{snapshot}/revert", status_code=202, dependencies=[OPERATOR])
async def revert_snapshot(name: InstanceName, snapshot: str, services: ServicesDep) -> Operation:
    return await _svc(services).revert(name, snapshot)


@router.delete("/{snapshot}", status_code=202, dependencies=[OPERATOR])
async def delete_snapshot(name: InstanceName, snapshot: str, services: ServicesDep) -> Operation:
    return await _svc(services).delete(name, snapshot)
