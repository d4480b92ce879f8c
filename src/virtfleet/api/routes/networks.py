"""Routes of ``/1.0/networks``: list, create, show and delete virtual networks.

Handlers only parse, call ``NetworkService`` and return. Must not hold business
rules or touch the host.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from virtfleet.api.auth import ADMIN, ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.network import NET_NAME_PATTERN, Network, NetworkSpec, validate_network_name
from virtfleet.service import NetworkService, Services

router = APIRouter(prefix="/1.0/networks", tags=["networks"], dependencies=[ANY_USER])
_NAME_DOC = Path(json_schema_extra={"pattern": NET_NAME_PATTERN, "maxLength": 15})


async def network_name(name: Annotated[str, _NAME_DOC]) -> str:
    return validate_network_name(name)


NetworkName = Annotated[str, Depends(network_name)]


def _networks(services: Services) -> NetworkService:
    if services.networks is None:
        raise HostError("virtual networks are not available on this daemon")
    return services.networks


@router.get("")
async def list_networks(services: ServicesDep) -> list[Network]:
    return await _networks(services).list()


@router.post("", status_code=201, dependencies=[ADMIN])
async def create_network(body: NetworkSpec, services: ServicesDep) -> Network:
    """Create a network. In a cluster a bridged network is every member's (each member's
    agent realises it and reports ok or why not, in ``hosts``); a nat/isolated one is
    owned by ``host`` (id or name; default: the member that answers) and exists only
    there. This member makes its part before anything is recorded (409 on a clash)."""
    return await _networks(services).create(body)


@router.get("/{name}")
async def get_network(name: NetworkName, services: ServicesDep) -> Network:
    """The network, its scope and owning host, and each member's realisation (``hosts``)."""
    return await _networks(services).get(name)


@router.delete("/{name}", dependencies=[ADMIN])
async def delete_network(name: NetworkName, services: ServicesDep) -> dict[str, Any]:
    return {"name": name, "deleted": await _networks(services).delete(name)}
