"""Routes of ``/1.0/images``: list, build (202 operation), show, delete.

Handlers only parse, call ``ImageService`` and return. Must not touch image files.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ADMIN, ANY_USER, OPERATOR, Viewer
from virtfleet.api.deps import ImageName, ServicesDep
from virtfleet.api.imaging import ExportImage, ImportImage
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.api.schemas import BuildImage
from virtfleet.model.operation import Operation
from virtfleet.service.images import ImageRecord

router = APIRouter(prefix="/1.0/images", tags=["images"], dependencies=[ANY_USER])


@router.get("")
async def list_images(principal: Viewer, services: ServicesDep) -> list[ImageRecord]:
    return all_for_principal(principal, await services.images.list())


@router.post("", status_code=202, dependencies=[OPERATOR])
async def build_image(body: BuildImage, services: ServicesDep) -> Operation:
    return await services.images.build(body.name, builder=body.builder, force=body.force)


@router.post("/import", status_code=202, dependencies=[ADMIN])
async def import_image(body: ImportImage, services: ServicesDep) -> Operation:
    """Convert a disk file on the host (raw, qcow2, vmdk, vhdx, vpc, vdi) into the store."""
    return await services.images.import_file(body.name, body.path, body.format, body.force)


@router.post("/{name}/export", status_code=202, dependencies=[ADMIN])
async def export_image(name: ImageName, body: ExportImage, services: ServicesDep) -> Operation:
    """Write the image to a new file on the host as qcow2, raw or vmdk."""
    return await services.images.export(name, body.path, body.format)


@router.get("/{name}")
async def get_image(name: ImageName, principal: Viewer, services: ServicesDep) -> ImageRecord:
    return for_principal(principal, await services.images.get(name))


@router.delete("/{name}", dependencies=[OPERATOR])
async def delete_image(name: ImageName, services: ServicesDep) -> dict[str, Any]:
    return {"name": name, "deleted": await services.images.delete(name)}
