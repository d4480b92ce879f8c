"""Routes of ``/1.0/instances``: list, create, show, delete, change power state, serial log.

Handlers only parse, call ``InstanceService`` and return; slow work answers 202
with the ``Operation``. Must not hold business rules or touch the store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from virtfleet.api.auth import ANY_USER, OPERATOR, Viewer
from virtfleet.api.conditional import IfMatchDep, etag_of
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.api.schemas import CreateInstance, StateChange
from virtfleet.model.operation import Operation
from virtfleet.service.console import MAX_TAIL_BYTES, read_log_tail
from virtfleet.service.instances import Instance

router = APIRouter(prefix="/1.0/instances", tags=["instances"], dependencies=[ANY_USER])
_ETAG_DOC = {"ETag": {"description": "Version for If-Match", "schema": {"type": "string"}}}


@router.get("")
async def list_instances(principal: Viewer, services: ServicesDep) -> list[Instance]:
    """Every instance; for viewers cloud-init secrets (user_data, network_config, runcmd,
    write_files contents) read ``***``."""
    return all_for_principal(principal, await services.instances.list())


@router.post("", status_code=202, dependencies=[OPERATOR])
async def create_instance(body: CreateInstance, services: ServicesDep) -> Operation:
    return await services.instances.create(
        body.spec(), start=body.start, reuse_disks=body.reuse_disks
    )


@router.get("/{name}", responses={200: {"headers": _ETAG_DOC}})
async def get_instance(
    name: InstanceName, principal: Viewer, services: ServicesDep, response: Response
) -> Instance:
    instance, version = await services.instances.get_versioned(name)
    response.headers["ETag"] = etag_of(version)
    return for_principal(principal, instance)


@router.delete("/{name}", status_code=202, dependencies=[OPERATOR])
async def delete_instance(
    name: InstanceName,
    services: ServicesDep,
    if_match: IfMatchDep,
    force: bool = False,
    disks: bool = False,
) -> Operation:
    return await services.instances.delete(name, force=force, delete_disks=disks, if_match=if_match)


@router.put("/{name}/state", status_code=202, dependencies=[OPERATOR])
async def change_state(
    name: InstanceName, body: StateChange, services: ServicesDep, if_match: IfMatchDep
) -> Operation:
    op = await services.instances.change_state(
        name, body.action, force=body.force, timeout_s=body.timeout_s, if_match=if_match
    )
    return await services.operations.wait(op.id, body.wait_s) if body.wait_s else op


@router.get("/{name}/log")
async def get_log(
    name: InstanceName,
    services: ServicesDep,
    tail_bytes: Annotated[int, Query(ge=0, le=MAX_TAIL_BYTES)] = 64 * 1024,
) -> dict[str, Any]:
    await services.instances.get(name)
    text = await read_log_tail(services.console.log_path(name), tail_bytes)
    return {"name": name, "log": text}
