"""Routes of ``/1.0/storage-pools``: create, list, show and delete pools, and list and
show their volumes.

Handlers only parse, call ``PoolService`` and return. Must not hold business rules or
touch the host.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from virtfleet.api.auth import ADMIN, ANY_USER
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.names import NAME_PATTERN, validate_name
from virtfleet.model.pools import Pool, PoolCreate, Volume
from virtfleet.service import PoolService, Services

router = APIRouter(prefix="/1.0/storage-pools", tags=["storage"], dependencies=[ANY_USER])
_NAME_DOC = Path(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63})


async def pool_name(pool: Annotated[str, _NAME_DOC]) -> str:
    return validate_name(pool, "pool name")


async def disk_name(disk: Annotated[str, _NAME_DOC]) -> str:
    return validate_name(disk, "disk name")


PoolName = Annotated[str, Depends(pool_name)]
DiskName = Annotated[str, Depends(disk_name)]


def _pools(services: Services) -> PoolService:
    if services.pools is None:
        raise HostError("storage pools are not available on this daemon")
    return services.pools


@router.get("")
async def list_pools(services: ServicesDep) -> list[Pool]:
    return await _pools(services).list()


@router.post("", status_code=201, dependencies=[ADMIN])
async def create_pool(body: PoolCreate, services: ServicesDep) -> Pool:
    return await _pools(services).create(body)


@router.get("/{pool}")
async def get_pool(pool: PoolName, services: ServicesDep) -> Pool:
    return await _pools(services).get(pool)


@router.delete("/{pool}", dependencies=[ADMIN])
async def delete_pool(pool: PoolName, services: ServicesDep) -> dict[str, Any]:
    return await _pools(services).delete(pool)


@router.get("/{pool}/volumes")
async def list_volumes(pool: PoolName, services: ServicesDep) -> list[Volume]:
    return await _pools(services).volumes(pool)


@router.get("/{pool}/volumes/{name}/{disk}")
async def get_volume(
    pool: PoolName, name: InstanceName, disk: DiskName, services: ServicesDep
) -> Volume:
    return await _pools(services).volume(pool, name, disk)
