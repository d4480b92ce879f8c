"""Routes of ``/1.0/instances``: list, create, show, delete, change power state, serial log.

Handlers only parse, call ``InstanceService`` and return; slow work answers 202
with the ``Operation``. Must not hold business rules or touch the store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.schemas import CreateInstance, StateChange
from virtfleet.model.operation import Operation
from virtfleet.service.console import MAX_TAIL_BYTES, read_log_tail
from virtfleet.service.instances import Instance

router = APIRouter(prefix="/1.0/instances", tags=["instances"])


@router.get("")
async def list_instances(services: ServicesDep) -> list[Instance]:
    return await services.instances.list()


@router.post("", status_code=202)
async def create_instance(body: CreateInstance, services: ServicesDep) -> Operation:
    return await services.instances.create(body.spec(), start=body.start)


@router.get("/{name}")
async def get_instance(name: InstanceName, services: ServicesDep) -> Instance:
    return await services.instances.get(name)


@router.delete("/{name}", status_code=202)
async def delete_instance(
    name: InstanceName, services: ServicesDep, force: bool = False, disks: bool = False
) -> Operation:
    return await services.instances.delete(name, force=force, delete_disks=disks)


@router.put("/{name}/state", status_code=202)
async def change_state(name: InstanceName, body: StateChange, services: ServicesDep) -> Operation:
    return await services.instances.change_state(
        name, body.action, force=body.force, timeout_s=body.timeout_s
    )


@router.get("/{name}/log")
async def get_log(
    name: InstanceName,
    services: ServicesDep,
    tail_bytes: Annotated[int, Query(ge=0, le=MAX_TAIL_BYTES)] = 64 * 1024,
) -> dict[str, Any]:
    await services.instances.get(name)
    text = await read_log_tail(services.console.log_path(name), tail_bytes)
    return {"name": name, "log": text}
