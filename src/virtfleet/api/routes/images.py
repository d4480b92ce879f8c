"""Routes of ``/1.0/images``: list, build (202 operation), show, delete.

Handlers only parse, call ``ImageService`` and return. Must not touch image files.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR, Admin, Viewer
from virtfleet.api.deps import ImageName, ServicesDep
from virtfleet.api.imaging import ExportImage, ImportImage, ImportOciImage
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.api.schemas import BuildImage
from virtfleet.model.auth import Principal
from virtfleet.model.operation import Operation
from virtfleet.service.images import ImageRecord

router = APIRouter(prefix="/1.0/images", tags=["images"], dependencies=[ANY_USER])


def is_local_root(principal: Principal) -> bool:
    """Whether the caller is the local root (Unix socket, no credentials): it may name any
    host path, being root on this host anyway; TCP admins (and tokens) are confined."""
    return principal.via == "local"


@router.get("")
async def list_images(principal: Viewer, services: ServicesDep) -> list[ImageRecord]:
    return all_for_principal(principal, await services.images.list())


@router.post("", status_code=202, dependencies=[OPERATOR])
async def build_image(body: BuildImage, services: ServicesDep) -> Operation:
    return await services.images.build(body.name, builder=body.builder, force=body.force)


@router.post("/import", status_code=202)
async def import_image(body: ImportImage, admin: Admin, services: ServicesDep) -> Operation:
    """Convert a disk file in the daemon's import directory (raw, qcow2, vmdk, vhdx, vpc,
    vdi) into the store; only the local root (Unix socket) may name any host path."""
    return await services.images.import_file(
        body.name, body.path, body.format, body.force, trusted=is_local_root(admin)
    )


@router.post("/import-oci", status_code=202)
async def import_oci_image(body: ImportOciImage, admin: Admin, services: ServicesDep) -> Operation:
    """Import an OCI image layout (directory or tarball) or a ``docker save`` archive from
    the daemon's import directory (or a ``docker://`` image through skopeo) as a
    container image; every digest verified, hostile layers refused."""
    return await services.images.import_oci(
        body.name, body.path, body.from_ref, body.force, trusted=is_local_root(admin)
    )


@router.post("/{name}/export", status_code=202)
async def export_image(
    name: ImageName, body: ExportImage, admin: Admin, services: ServicesDep
) -> Operation:
    """Write the image as qcow2, raw or vmdk to a new file in the daemon's export
    directory; only the local root (Unix socket) may name any host path."""
    return await services.images.export(name, body.path, body.format, trusted=is_local_root(admin))


@router.get("/{name}")
async def get_image(name: ImageName, principal: Viewer, services: ServicesDep) -> ImageRecord:
    return for_principal(principal, await services.images.get(name))


@router.delete("/{name}", dependencies=[OPERATOR])
async def delete_image(name: ImageName, services: ServicesDep) -> dict[str, Any]:
    return {"name": name, "deleted": await services.images.delete(name)}
