"""Routes of ``/1.0/images``: list, build (202 operation), show, delete.

Handlers only parse, call ``ImageService`` and return. Must not touch image files.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from virtfleet.api.auth import ANY_USER, FORWARDED_BY, OPERATOR, Admin, Viewer
from virtfleet.api.deps import ImageName, ServicesDep
from virtfleet.api.imaging import ExportImage, FetchImage, ImportImage, ImportOciImage
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.api.schemas import BuildImage
from virtfleet.errors import ForbiddenError
from virtfleet.model.auth import Principal
from virtfleet.model.operation import Operation
from virtfleet.service.images import ImageRecord

router = APIRouter(prefix="/1.0/images", tags=["images"], dependencies=[ANY_USER])


def member_only(request: Request) -> None:
    """Only another cluster member (a verified member credential) may use the route."""
    if not request.scope.get("state", {}).get(FORWARDED_BY):
        raise ForbiddenError("only another cluster member may use this")


MEMBER = Depends(member_only)


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
    """Delete the image and every member's copy of its file; ``kept_on``: the hosts that
    could not be reached to drop theirs."""
    deleted, kept = await services.images.delete_everywhere(name)
    return {"name": name, "deleted": deleted, "kept_on": kept}


@router.post("/{name}/fetch", status_code=202, dependencies=[OPERATOR])
async def fetch_image(
    name: ImageName, services: ServicesDep, body: FetchImage | None = None
) -> Operation:
    """Have a member (default: this host) hold the image's file, streamed from a member
    that has it and checked by its sha256: an ``image.fetch`` operation on that member."""
    return await services.images.fetch(name, body.host if body else None)


@router.get("/{name}/file", dependencies=[MEMBER], include_in_schema=False)
async def image_file(name: ImageName, services: ServicesDep) -> FileResponse:
    """This host's copy of the image's file, for a member fetching it (members only)."""
    return FileResponse(
        await services.images.local_file(name), media_type="application/octet-stream"
    )


@router.delete("/{name}/file", dependencies=[MEMBER], include_in_schema=False)
async def drop_image_file(name: ImageName, services: ServicesDep) -> dict[str, Any]:
    """Remove this host's copy of a deleted image's file (members only)."""
    return {"name": name, "dropped": await services.images.drop_copy(name)}
