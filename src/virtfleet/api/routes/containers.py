"""Container-only routes under ``/1.0/instances/{name}``: exec, live limits, rootfs snapshots.

Handlers only parse, call ``ContainerService`` and return. Exec and limit changes
are quick (bounded by ``timeout_s``) and answer directly rather than as operations.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.errors import ConflictError
from virtfleet.model.container import ExecOutput, ExecRequest, LimitsChange, SnapshotRequest
from virtfleet.model.instance import InstanceSpec
from virtfleet.service import Services
from virtfleet.service.containers import ContainerService

router = APIRouter(prefix="/1.0/instances", tags=["containers"], dependencies=[ANY_USER])


def _svc(services: Services) -> ContainerService:
    if services.containers is None:
        raise ConflictError("this server has no container support")
    return services.containers


@router.post("/{name}/exec", dependencies=[OPERATOR])
async def exec_in(name: InstanceName, body: ExecRequest, services: ServicesDep) -> ExecOutput:
    """Run a command in a running container; its exit code and output (not a shell)."""
    return await _svc(services).exec(name, body.command, body.timeout_s)


@router.patch("/{name}/limits", dependencies=[OPERATOR])
async def set_limits(name: InstanceName, body: LimitsChange, services: ServicesDep) -> InstanceSpec:
    """Change CPU / memory / pids limits; applied live to a running container."""
    return await _svc(services).set_limits(name, body.model_dump(exclude_unset=True))


@router.get("/{name}/rootfs-snapshots")
async def list_snapshots(name: InstanceName, services: ServicesDep) -> list[str]:
    return await _svc(services).snapshots(name)


@router.post("/{name}/rootfs-snapshots", status_code=201, dependencies=[OPERATOR])
async def create_snapshot(
    name: InstanceName, body: SnapshotRequest, services: ServicesDep
) -> list[str]:
    """Snapshot the stopped container's root file system (its overlay layer)."""
    return await _svc(services).snapshot(name, body.name)


@router.post("/{name}/rootfs-snapshots/{snap}/restore", dependencies=[OPERATOR])
async def restore_snapshot(name: InstanceName, snap: str, services: ServicesDep) -> dict[str, str]:
    await _svc(services).restore(name, snap)
    return {"name": name, "restored": snap}


@router.delete("/{name}/rootfs-snapshots/{snap}", status_code=204, dependencies=[OPERATOR])
async def delete_snapshot(name: InstanceName, snap: str, services: ServicesDep) -> None:
    await _svc(services).delete_snapshot(name, snap)
