"""Routes of resource changes and capacity: PATCH /1.0/instances/{name}, its live view,
and /1.0/host/capacity.

Handlers only parse, call ``ResourceService`` / ``CapacityService`` and return;
a resize answers 202 with the ``Operation`` (its result lists every change as
live or next-boot). Must not hold business rules.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.conditional import IfMatchDep
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.errors import NotFoundError
from virtfleet.model.capacity import Capacity
from virtfleet.model.operation import Operation
from virtfleet.model.resources import ResourcePatch
from virtfleet.service import CapacityService, ResourceService, Services

router = APIRouter(tags=["resources"], dependencies=[ANY_USER])


def _resources(services: Services) -> ResourceService:
    if services.resources is None:
        raise NotFoundError("resource changes are not available on this server")
    return services.resources


def _capacity(services: Services) -> CapacityService:
    if services.capacity is None:
        raise NotFoundError("capacity accounting is not available on this server")
    return services.capacity


@router.patch("/1.0/instances/{name}", status_code=202, dependencies=[OPERATOR])
async def patch_instance(
    name: InstanceName, body: ResourcePatch, services: ServicesDep, if_match: IfMatchDep
) -> Operation:
    """Change memory, vCPUs, CPU/IO limits, disks and NICs; live where the VM allows."""
    return await _resources(services).update(name, body, if_match=if_match)


@router.get("/1.0/instances/{name}/resources")
async def instance_resources(name: InstanceName, services: ServicesDep) -> dict[str, Any]:
    """What runs now: the applied spec and the hypervisor's live figures (balloon, vCPUs)."""
    return await _resources(services).live(name)


@router.get("/1.0/host/capacity")
async def host_capacity(services: ServicesDep) -> Capacity:
    """Totals, overcommit limits, allocated and really used resources of this host."""
    return await _capacity(services).report()
