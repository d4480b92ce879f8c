"""Routes of ``/1.0/host``: the host's virtualization facts, its fitness checks and its
boot report; and of ``/1.0/hosts``: every host of the platform as the store records it.

Handlers only call ``HostService`` and ``BootService``. Must not probe the host.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ADMIN, ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import HostError, NotFoundError
from virtfleet.model.boot import BootReport
from virtfleet.model.host import Check, HostFacts, HostRecord
from virtfleet.model.instance import Strict
from virtfleet.model.operation import Operation

router = APIRouter(prefix="/1.0/host", tags=["host"], dependencies=[ANY_USER])
hosts_router = APIRouter(prefix="/1.0/hosts", tags=["host"], dependencies=[ANY_USER])


@hosts_router.get("")
async def list_hosts(services: ServicesDep) -> list[HostRecord]:
    """Every host (id, name, API URL, facts, capacity, state); ``offline`` when its
    liveness lease lapsed."""
    return await services.host.hosts()


@hosts_router.get("/{host}")
async def get_one_host(host: str, services: ServicesDep) -> HostRecord:
    """One host, by id or by name."""
    return await services.host.get_host(host)


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


class ShutdownGuests(Strict):
    """``timeout_s``: how long each guest may take to power off before it is forced."""

    timeout_s: float = 60.0


@router.post("/shutdown-guests", status_code=202, dependencies=[ADMIN])
async def shutdown_guests(body: ShutdownGuests, services: ServicesDep) -> Operation:
    """Stop every running guest, in the reverse of the boot order (what the service unit
    runs when the system goes down; a daemon restart leaves guests running)."""
    if services.shutdown is None:
        raise HostError("this daemon cannot shut guests down")
    return await services.shutdown.shutdown_guests(body.timeout_s)
