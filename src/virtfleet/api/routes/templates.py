"""Routes of ``/1.0/templates``: list, create (202), show, delete, and clone into VMs (202).

Handlers only parse, call ``TemplateService``/``ImageService`` and return.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER, OPERATOR, Viewer
from virtfleet.api.deps import ImageName, ServicesDep
from virtfleet.api.imaging import CloneTemplate, CreateTemplate
from virtfleet.api.redaction import all_for_principal, for_principal
from virtfleet.errors import HostError
from virtfleet.model.operation import Operation
from virtfleet.service import Services, TemplateService
from virtfleet.service.templates import TemplateView

router = APIRouter(prefix="/1.0/templates", tags=["templates"], dependencies=[ANY_USER])


def _templates(services: Services) -> TemplateService:
    if services.templates is None:
        raise HostError("templates are not available on this server")
    return services.templates


@router.get("")
async def list_templates(principal: Viewer, services: ServicesDep) -> list[TemplateView]:
    return all_for_principal(principal, await _templates(services).list())


@router.post("", status_code=202, dependencies=[OPERATOR])
async def create_template(body: CreateTemplate, services: ServicesDep) -> Operation:
    return await _templates(services).create(body.name, body.instance, body.image, body.defaults)


@router.get("/{name}")
async def get_template(name: ImageName, principal: Viewer, services: ServicesDep) -> TemplateView:
    return for_principal(principal, await _templates(services).get(name))


@router.delete("/{name}", dependencies=[OPERATOR])
async def delete_template(name: ImageName, services: ServicesDep) -> dict[str, Any]:
    """Refused (409 ``in_use``, naming them) while linked clones use it."""
    await _templates(services).get(name)
    return {"name": name, "deleted": await services.images.delete(name)}


@router.post("/{name}/instances", status_code=202, dependencies=[OPERATOR])
async def clone_template(name: ImageName, body: CloneTemplate, services: ServicesDep) -> Operation:
    """Create VMs from the template as one all-or-nothing operation."""
    return await _templates(services).clone(
        name, body.names, body.count, body.clone, body.start, body.cloud_init, body.overrides(),
        keep_tpm=body.keep_tpm, pool=body.pool,
    )  # fmt: skip
