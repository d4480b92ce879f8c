"""Routes of ``/1.0/host``: the host's virtualization facts and its fitness checks.

Handlers only call ``HostService``. Must not probe the host.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.model.host import Check, HostFacts

router = APIRouter(prefix="/1.0/host", tags=["host"], dependencies=[ANY_USER])


@router.get("")
async def get_host(services: ServicesDep) -> HostFacts:
    return services.host.facts


@router.get("/check")
async def check_host(services: ServicesDep) -> list[Check]:
    return services.host.check()
