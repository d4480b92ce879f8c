"""Routes of ``/1.0/cluster``: the store this member runs on, etcd's members, the hosts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query

from virtfleet.api.auth import ADMIN, ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.errors import HostError
from virtfleet.model.cluster import (
    ClusterInitRequest,
    ClusterInitResult,
    ClusterJoinRequest,
    ClusterJoinResult,
    ClusterLeaveResult,
    ClusterStatus,
    CreateJoinToken,
    HostRemoval,
    JoinGrant,
    JoinRequest,
    NewJoinToken,
)

router = APIRouter(prefix="/1.0/cluster", tags=["host"], dependencies=[ANY_USER])
# A joining host has no account here: its one-time join token is its credential.
join_router = APIRouter(prefix="/1.0/cluster", tags=["host"])


@router.get("")
async def cluster_status(services: ServicesDep) -> ClusterStatus:
    """The store (``sqlite``: a single host; ``etcd``: its members with leader, db size,
    raft index and version, or why a member does not answer), every host with its state
    and lease age, and this host's id. 503 ``store_unavailable`` without etcd quorum."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    return await services.cluster.status()


@router.post("/init", dependencies=[ADMIN])
async def cluster_init(
    body: ClusterInitRequest, services: ServicesDep, background: BackgroundTasks
) -> ClusterInitResult:
    """Turn this single host into a one-member etcd cluster: its etcd member starts (TLS
    from a new cluster CA), every record moves from SQLite into etcd, the SQLite file is
    backed up, and the daemon restarts on etcd (guests keep running; ETags change).
    409 ``already_clustered`` on a cluster member."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    result = await services.cluster.init(body)
    background.add_task(services.cluster.after_init)  # after the reply went out
    return result


@router.delete("/hosts/{host}", dependencies=[ADMIN])
async def cluster_remove_host(
    host: str, services: ServicesDep, force: Annotated[bool, Query()] = False
) -> HostRemoval:
    """Forget a host that is gone for good (``force`` required): its record and its etcd
    member. 409 for this host (use leave) or a host that is online; instances it owned
    stay listed (``orphaned``) with their owner offline."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    return await services.cluster.remove_host(host, force)


@router.post("/tokens", status_code=201, dependencies=[ADMIN])
async def cluster_token_create(body: CreateJoinToken, services: ServicesDep) -> NewJoinToken:
    """A one-time join token (shown once) for ``cluster join``: it carries this member's
    API URL and the fingerprints of the cluster CA and of the API's certificate, and
    expires after ``ttl_s``. 409 on a host that is not a cluster member with a CA."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    return await services.cluster.create_join_token(body.ttl_s)


@join_router.post("/members")
async def cluster_admit(body: JoinRequest, services: ServicesDep) -> JoinGrant:
    """A host joins with a one-time token (no account): its certificate request is signed
    by the cluster CA and its etcd member added as a learner. 401 for a wrong, expired or
    used token; 409 ``already_exists`` naming the instances (or the host name) already in
    the cluster — nothing changed on either side."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    return await services.cluster.admit(body)


@router.post("/join", dependencies=[ADMIN])
async def cluster_join(
    body: ClusterJoinRequest, services: ServicesDep, background: BackgroundTasks
) -> ClusterJoinResult:
    """Join the cluster at ``url`` with a token from ``cluster token create`` there: this
    host's etcd member joins, its instances (names checked free first) move into the
    cluster, the SQLite file is backed up and the daemon restarts on etcd (guests keep
    running). 409 ``already_clustered`` on a member; the cluster's refusal (a wrong,
    expired or used token: 401; taken names: 409) changes nothing."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    result = await services.cluster.join(body)
    background.add_task(services.cluster.after_init)  # after the reply went out
    return result


@router.post("/leave", dependencies=[ADMIN])
async def cluster_leave(services: ServicesDep, background: BackgroundTasks) -> ClusterLeaveResult:
    """Take this host out of its cluster: its etcd member and host record leave, and the
    daemon restarts as a single host on a fresh SQLite file (the old one kept aside).
    409 ``in_use`` naming the instances it still owns; 409 for the last etcd member."""
    if services.cluster is None:
        raise HostError("the cluster view is not available on this daemon")
    result = await services.cluster.leave()
    background.add_task(services.cluster.after_init)  # restart after the reply went out
    return result
