"""Routes for OVA packages and VM disk exports: ``POST /1.0/ova/import``,
``POST /1.0/instances/{name}/export-ova`` and ``.../disks/{disk}/export``.

Both read or write files on the daemon's host, so they need the admin role.
Handlers only parse, call ``OvaService`` and return.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ADMIN
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.imaging import ExportImage, ExportOva, ImportOva
from virtfleet.errors import HostError
from virtfleet.model.operation import Operation
from virtfleet.service import OvaService, Services

router = APIRouter(prefix="/1.0", tags=["ova"], dependencies=[ADMIN])


def _ova(services: Services) -> OvaService:
    if services.ova is None:
        raise HostError("OVA import/export is not available on this server")
    return services.ova


@router.post("/ova/import", status_code=202)
async def import_ova(body: ImportOva, services: ServicesDep) -> Operation:
    """Import an OVA (OVF + disks) as images plus a ready VM definition."""
    return await _ova(services).import_ova(body.path, body.name, body.start, body.keep_macs)


@router.post("/instances/{name}/export-ova", status_code=202)
async def export_ova(name: InstanceName, body: ExportOva, services: ServicesDep) -> Operation:
    """Write a stopped VM as an OVA package at a new host path."""
    return await _ova(services).export_ova(name, body.path)


@router.post("/instances/{name}/disks/{disk}/export", status_code=202)
async def export_disk(
    name: InstanceName, disk: str, body: ExportImage, services: ServicesDep
) -> Operation:
    """Write one disk of a stopped VM, flattened, as qcow2, raw or vmdk at a new host path."""
    return await _ova(services).export_disk(name, disk, body.path, body.format)
