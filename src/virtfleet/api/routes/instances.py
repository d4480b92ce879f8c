"""Routes of ``/1.0/instances``: list, create, show, delete, change power state, serial log.

Handlers only parse, call ``InstanceService`` and return; slow work answers 202
with the ``Operation``. Must not hold business rules or touch the store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from virtfleet.api.auth import ANY_USER, OPERATOR, Operator, Viewer
from virtfleet.api.conditional import IfMatchDep, etag_of
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.redaction import for_principal, mask_cloud_init
from virtfleet.api.routes.images import is_local_root
from virtfleet.api.schemas import CreateInstance, StateChange
from virtfleet.errors import ForbiddenError
from virtfleet.model.auth import Role
from virtfleet.model.operation import Operation
from virtfleet.service.console import MAX_TAIL_BYTES, read_log_tail
from virtfleet.service.instances import Instance

router = APIRouter(prefix="/1.0/instances", tags=["instances"], dependencies=[ANY_USER])
_ETAG_DOC = {"ETag": {"description": "Version for If-Match", "schema": {"type": "string"}}}
CONTINUE_HEADER = "Virtfleet-Continue"
_CONTINUE_DOC = {
    CONTINUE_HEADER: {
        "description": "Token for the next page (``continue``); absent on the last page",
        "schema": {"type": "string"},
    }
}
MAX_PAGE = 1000
_FIELDS_HELP = (
    "Comma-separated top-level fields of each instance to answer with (e.g. name,status);"
    " every field if absent"
)


@router.get(
    "",
    response_model=list[Instance],
    responses={200: {"headers": _CONTINUE_DOC}},
)
async def list_instances(
    principal: Viewer,
    services: ServicesDep,
    fields: Annotated[str | None, Query(description=_FIELDS_HELP)] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
    continue_token: Annotated[str | None, Query(alias="continue", max_length=512)] = None,
) -> Response:
    """Every instance in name order; for viewers cloud-init secrets (user_data,
    network_config, runcmd, write_files contents) read ``***``. ``limit``: a page of at
    most that many; the ``Virtfleet-Continue`` header then carries the token that asks
    for the next page (``continue``), absent on the last page. An unknown field answers
    400 ``unknown_field``, a token not made by this daemon 400 ``invalid_continue``."""
    mask = None if principal.role.allows(Role.OPERATOR) else mask_cloud_init
    page = await services.instances.list_json(fields, limit, continue_token, mask)
    response = Response(page.body, media_type="application/json")
    if page.next_token is not None:
        response.headers[CONTINUE_HEADER] = page.next_token
    return response


@router.post("", status_code=202, dependencies=[OPERATOR])
async def create_instance(
    body: CreateInstance, principal: Operator, services: ServicesDep
) -> Operation:
    spec = body.spec()
    if spec.driver_iso is not None:  # a host file: as an import's source, and only admins
        if not principal.role.allows(Role.ADMIN):
            raise ForbiddenError(f"{principal.username}: naming a host file needs role admin")
        shown = await services.images.host_file(spec.driver_iso, is_local_root(principal))
        spec = spec.model_copy(update={"driver_iso": shown})
    return await services.instances.create(
        spec, start=body.start, reuse_disks=body.reuse_disks, host=body.host
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
