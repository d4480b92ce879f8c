"""Routes of ``/1.0/disks``: list disk directories (kept ones with ``orphaned=true``) and
delete the kept disks of a name no instance has.

Handlers only parse, call ``DiskService`` and return.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.disks import DiskDir
from virtfleet.service import DiskService, Services

router = APIRouter(prefix="/1.0/disks", tags=["disks"], dependencies=[ANY_USER])


def _disks(services: Services) -> DiskService:
    if services.disks is None:
        raise HostError("disk management is not available on this server")
    return services.disks


@router.get("")
async def list_disks(services: ServicesDep, orphaned: bool = False) -> list[DiskDir]:
    """Every instance disk directory; ``orphaned``: only those no instance owns (kept by
    ``vm delete`` without ``--disks``)."""
    return await _disks(services).list(orphaned)


@router.delete("/{name}", dependencies=[OPERATOR])
async def delete_disks(name: InstanceName, services: ServicesDep) -> dict[str, Any]:
    """Remove the kept disks of ``name``; 409 ``in_use`` while instance ``name`` exists."""
    return await _disks(services).delete(name)
