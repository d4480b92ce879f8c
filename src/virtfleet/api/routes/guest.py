"""Route ``GET /1.0/instances/{name}/guest``: what the VM's guest agent reports.

Handlers only parse, call ``GuestService`` and return.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.model.guest import GuestInfo

router = APIRouter(prefix="/1.0/instances", tags=["instances"], dependencies=[ANY_USER])


@router.get("/{name}/guest")
async def guest_info(name: InstanceName, services: ServicesDep) -> GuestInfo:
    """Agent ping, OS, hostname, interfaces and IPs; ``agent: false`` with ``error`` if none."""
    if services.guests is None:
        return GuestInfo(error="guest agents are not available on this server")
    return await services.guests.info(name)
