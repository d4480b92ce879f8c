"""Routes for OVA packages and VM disk exports: ``POST /1.0/ova/import``,
``POST /1.0/instances/{name}/export-ova`` and ``.../disks/{disk}/export``.

Both read or write files on the daemon's host, so they need the admin role, and
only the local root (Unix socket, no credentials) may name paths outside the
import and export directories.
Handlers only parse, call ``OvaService`` and return.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ADMIN, Admin
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.imaging import ExportImage, ExportOva, ImportOva
from virtfleet.api.routes.images import is_local_root
from virtfleet.errors import HostError
from virtfleet.model.operation import Operation
from virtfleet.service import OvaService, Services

router = APIRouter(prefix="/1.0", tags=["ova"], dependencies=[ADMIN])


def _ova(services: Services) -> OvaService:
    if services.ova is None:
        raise HostError("OVA import/export is not available on this server")
    return services.ova


@router.post("/ova/import", status_code=202)
async def import_ova(body: ImportOva, admin: Admin, services: ServicesDep) -> Operation:
    """Import an OVA (OVF + disks) from the import directory as images plus a ready VM."""
    trusted = is_local_root(admin)
    return await _ova(services).import_ova(
        body.path, body.name, body.start, body.keep_macs, trusted=trusted
    )


@router.post("/instances/{name}/export-ova", status_code=202)
async def export_ova(
    name: InstanceName, body: ExportOva, admin: Admin, services: ServicesDep
) -> Operation:
    """Write a stopped VM as an OVA package at a new path in the export directory."""
    return await _ova(services).export_ova(name, body.path, trusted=is_local_root(admin))


@router.post("/instances/{name}/disks/{disk}/export", status_code=202)
async def export_disk(
    name: InstanceName, disk: str, body: ExportImage, admin: Admin, services: ServicesDep
) -> Operation:
    """Write one disk of a stopped VM, flattened, as qcow2, raw or vmdk at a new path in
    the export directory."""
    trusted = is_local_root(admin)
    return await _ova(services).export_disk(name, disk, body.path, body.format, trusted=trusted)
