"""Routes of ``/1.0/images``: list, build (202 operation), show, delete.

Handlers only parse, call ``ImageService`` and return. Must not touch image files.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR
from virtfleet.api.deps import ImageName, ServicesDep
from virtfleet.api.schemas import BuildImage
from virtfleet.model.operation import Operation
from virtfleet.service.images import ImageRecord

router = APIRouter(prefix="/1.0/images", tags=["images"], dependencies=[ANY_USER])


@router.get("")
async def list_images(services: ServicesDep) -> list[ImageRecord]:
    return await services.images.list()


@router.post("", status_code=202, dependencies=[OPERATOR])
async def build_image(body: BuildImage, services: ServicesDep) -> Operation:
    return await services.images.build(body.name, builder=body.builder, force=body.force)


@router.get("/{name}")
async def get_image(name: ImageName, services: ServicesDep) -> ImageRecord:
    return await services.images.get(name)


@router.delete("/{name}", dependencies=[OPERATOR])
async def delete_image(name: ImageName, services: ServicesDep) -> dict[str, Any]:
    return {"name": name, "deleted": await services.images.delete(name)}
