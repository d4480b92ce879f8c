"""Routes of ``/1.0/host``: the host's virtualization facts, its fitness checks and its
boot report.

Handlers only call ``HostService`` and ``BootService``. Must not probe the host.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import NotFoundError
from virtfleet.model.boot import BootReport
from virtfleet.model.host import Check, HostFacts

router = APIRouter(prefix="/1.0/host", tags=["host"], dependencies=[ANY_USER])


@router.get("")
async def get_host(services: ServicesDep) -> HostFacts:
    return services.host.facts


@router.get("/check")
async def check_host(services: ServicesDep) -> list[Check]:
    return services.host.check()


@router.get("/boot-report")
async def boot_report(services: ServicesDep) -> BootReport:
    """The last daemon start: was it a new host boot, and what the boot sequence started
    (in order, when, how long each took) and left stopped."""
    if services.boot is None:
        raise NotFoundError("this daemon keeps no boot report")
    return await services.boot.report()
