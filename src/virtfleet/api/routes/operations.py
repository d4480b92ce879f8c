"""Routes of ``/1.0/operations``: list, show, cancel (DELETE) and wait.

Handlers only call ``OperationRunner``. Must not run work themselves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from virtfleet.api.auth import ANY_USER, OPERATOR, Viewer
from virtfleet.api.deps import OperationId, ServicesDep
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.model.operation import Operation

router = APIRouter(prefix="/1.0/operations", tags=["operations"], dependencies=[ANY_USER])
MAX_WAIT_S = 600.0


@router.get("")
async def list_operations(principal: Viewer, services: ServicesDep) -> list[Operation]:
    """Every operation; for viewers cloud-init secrets in results read ``***``."""
    return all_for_principal(principal, await services.operations.list())


@router.get("/{op_id}")
async def get_operation(op_id: OperationId, principal: Viewer, services: ServicesDep) -> Operation:
    return for_principal(principal, await services.operations.get(op_id))


@router.delete("/{op_id}", dependencies=[OPERATOR])
async def cancel_operation(op_id: OperationId, services: ServicesDep) -> Operation:
    return await services.operations.cancel(op_id)


@router.get("/{op_id}/wait")
async def wait_operation(
    op_id: OperationId,
    principal: Viewer,
    services: ServicesDep,
    timeout_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 30.0,
) -> Operation:
    return for_principal(principal, await services.operations.wait(op_id, timeout_s))
