"""Where a request about an instance must run: here, or on the host that owns it.

Owns ``ForwardingService``: ``target(name)`` reads the instance's owner key and that
host's record and answers ``None`` (this host owns it, or there is no such instance:
the local route answers) or the ``OwnerTarget`` to forward to (its API URL and the
certificate fingerprint to pin). An owner that is offline (its lease lapsed) or has
no API URL is ``OwnerUnreachableError`` naming it, before anything is sent. It also
holds the ``MemberCredentials`` both sides use. Must not speak HTTP (``api.forward``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from virtfleet.errors import NotFoundError, OwnerUnreachableError
from virtfleet.service.membercred import MemberCredentials
from virtfleet.state.hosts import HostRepo
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore


@dataclass(frozen=True)
class OwnerTarget:
    host_id: str
    host_name: str
    api_url: str
    fingerprint: str | None  # None: plain HTTP on loopback (no certificate to pin)

    @property
    def label(self) -> str:
        return f"{self.host_name} ({self.host_id})"


class ForwardingService:
    def __init__(self, store: StateStore, host_id: str, credentials: MemberCredentials) -> None:
        self.instances = InstanceRepo(store)
        self.hosts = HostRepo(store)
        self.host_id = host_id
        self.credentials = credentials

    async def host_name(self, host_id: str) -> str:
        """The name of member ``host_id`` (its id if it has no record)."""
        try:
            return (await self.hosts.get(host_id)).name
        except NotFoundError:
            return host_id

    async def target(self, name: str) -> OwnerTarget | None:
        """The owner to forward a request about instance ``name`` to, or None to serve it here."""
        rec = await self.instances.find(name)
        if rec is None or rec.owner is None or rec.owner.host == self.host_id:
            return None
        return await self.reach(rec.owner.host, f"instance {name!r} is owned by")

    async def reach(self, host_id: str, what: str) -> OwnerTarget:
        """Where member ``host_id`` answers; ``OwnerUnreachableError`` (its message starts
        with ``what``) if it is offline, has no record or no address other hosts can use."""
        try:
            host = await self.hosts.get(host_id)
        except NotFoundError as err:
            raise _unreachable(what, host_id, "it has no host record") from err
        label = f"{host.name} ({host_id})"
        if not host.alive:
            raise _unreachable(what, label, "it is offline")
        if not host.api_url or host.api_url.startswith("unix:"):
            raise _unreachable(what, label, "it has no network API")
        if _wildcard(host.api_url):
            why = f"it listens on {host.api_url}, an address other hosts cannot use"
            raise _unreachable(what, label, why)
        return OwnerTarget(host_id, host.name, host.api_url, host.certificate_fingerprint)


def _wildcard(url: str) -> bool:
    """Whether ``url`` names an unspecified address (0.0.0.0, ::): itself, to every host."""
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "").is_unspecified
    except ValueError:
        return False  # a host name


def _unreachable(what: str, host: str, why: str) -> OwnerUnreachableError:
    return OwnerUnreachableError(f"{what} host {host}, which cannot be reached: {why}", host=host)
