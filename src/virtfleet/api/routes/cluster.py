"""Routes of ``/1.0/cluster``: the store this member runs on, etcd's members, the hosts."""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.cluster import ClusterStatus

router = APIRouter(prefix="/1.0/cluster", tags=["host"], dependencies=[ANY_USER])


@router.get("")
async def cluster_status(services: ServicesDep) -> ClusterStatus:
    """The store (``sqlite``: a single host; ``etcd``: its members with leader, db size,
    raft index and version, or why a member does not answer), every host with its state
    and lease age, and this host's id. 503 ``store_unavailable`` without etcd quorum."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    return await services.cluster.status()
