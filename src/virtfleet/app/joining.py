"""Joining a running cluster from a single host (``cluster join URL --token T``).

Owns the joining side: refuse if clustered; read the token (the URL must be the one it
names); make this member's key and certificate request; ask the cluster to admit it
(``POST URL/1.0/cluster/members`` over TLS pinned to the API certificate the token
names) with this host's instance names, so a collision is refused there before anything
changes (with ``--rename-suffix`` the cluster answers which stopped ones come in as
NAME+suffix, checked free and valid there first: their keys, MAC claims and disk and
run directories are renamed on the way in); check the CA the cluster sent against the
token's fingerprint; start this host's etcd member into the cluster as a learner and
promote it once it caught up; stop API requests, back the SQLite file up, bring this
host's instances (and the images, networks and MAC reservations the cluster lacks) into
etcd; write ``store.json`` (the commit point); then the daemon restarts on etcd and its
agent re-adopts the guests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from virtfleet.client.tls import find_mismatch, pinned_context
from virtfleet.errors import (
    ConflictError,
    InvalidInputError,
    StoreUnavailableError,
    VirtfleetError,
)
from virtfleet.host.clusterca import ClusterFiles, key_pem, make_csr, write_private, write_public
from virtfleet.host.etcdmember import EtcdMember, MemberConfig
from virtfleet.model.cluster import ClusterJoinRequest, ClusterJoinResult, JoinGrant, JoinToken
from virtfleet.model.enums import PowerState
from virtfleet.model.names import validate_name
from virtfleet.service.jointokens import decode
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.keys import IMAGE_FILES, IMAGES, INSTANCES, MACS, NETWORKS
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.transfer import import_keys
from virtfleet.util.fingerprint import fingerprint_pem

if TYPE_CHECKING:
    from virtfleet.app.clustering import ClusterFormer
    from virtfleet.app.settings import Settings

log = logging.getLogger(__name__)
PROMOTE_TIMEOUT_S = 30.0


async def join(former: ClusterFormer, request: ClusterJoinRequest) -> ClusterJoinResult:
    """Join the cluster ``request`` names (see the module docstring)."""
    former.refuse_if_clustered()
    token = decode(request.token)
    if request.url.rstrip("/") != token.api_url.rstrip("/"):
        raise InvalidInputError(f"this token is for {token.api_url}, not {request.url}")
    records = await InstanceRepo(former.store).list(shared=True)
    names = sorted(r.name for r in records)
    running = sorted(r.name for r in records if r.status.power not in _RENAMABLE)
    if request.rename_suffix is not None:
        validate_name(f"x{request.rename_suffix}", "rename suffix")  # what a name may hold
    config = MemberConfig(
        name=former.host_name, host=request.address or former.default_address(),
        client_port=request.client_port, peer_port=request.peer_port, state="existing",
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    body: dict[str, object] = {
        "name": former.host_name, "peer_url": config.peer_url, "instances": names,
        "csr": make_csr(key, config.name).decode(), "running": running,
        "rename_suffix": request.rename_suffix or "",
    }  # fmt: skip
    grant = await _admit(token, body)
    if fingerprint_pem(grant.ca_cert) != token.ca_fingerprint:
        raise ConflictError("the cluster's CA does not match the token's fingerprint: refused")
    member = EtcdMember(former.settings.data_dir, _with_initial(config, grant))
    files = ClusterFiles(member.files.root)
    moved: list[tuple[Path, Path]] = []
    try:
        write_public(files.ca_cert, grant.ca_cert.encode())
        write_public(files.cert, grant.cert.encode())
        write_private(files.key, key_pem(key))
        await member.start()
        await _promote(member, grant)
        former.gate(_SWITCHING)
        backup = former.backup()
        moved = _move_files(former.settings, grant.renamed)
        copied = await _import(backup, member, grant.renamed)
        former.commit(member)
    except BaseException:
        _move_back(moved)
        await former.undo(member)
        raise
    log.info("joined the cluster at %s: %d keys, instances %s", token.api_url, copied, names)
    return ClusterJoinResult(
        member=config.name, client_url=config.client_url,
        instances=sorted(grant.renamed.get(n, n) for n in names), backup=str(backup),
        restarting=former.restart is not None, renamed=grant.renamed,
    )  # fmt: skip


_SWITCHING = "this host is joining a cluster (cluster join): try again in a moment"


_RENAMABLE = (PowerState.STOPPED, PowerState.CRASHED)  # no process holds their files


def _move_files(settings: Settings, renamed: dict[str, str]) -> list[tuple[Path, Path]]:
    """Rename the host directories (disks, run files) of instances that join under a new
    name; refused, nothing moved, if a directory of the new name is in the way."""
    roots = (settings.disks_dir, settings.run_dir)
    moves = [
        (r / old, r / new) for old, new in renamed.items() for r in roots if (r / old).exists()
    ]
    blocked = [str(dest) for _, dest in moves if dest.exists()]
    if blocked:
        raise ConflictError(f"files of another instance are in the way: {', '.join(blocked)}")
    done: list[tuple[Path, Path]] = []
    try:
        for src, dest in moves:
            os.rename(src, dest)
            done.append((src, dest))
    except OSError:
        _move_back(done)
        raise
    return done


def _move_back(moved: list[tuple[Path, Path]]) -> None:
    for src, dest in reversed(moved):
        with contextlib.suppress(OSError):
            os.rename(dest, src)


async def _admit(token: JoinToken, request: dict[str, object]) -> JoinGrant:
    verify = pinned_context(token.api_fingerprint) if token.api_fingerprint else True
    body = {"secret": token.secret, **request}
    try:
        async with httpx.AsyncClient(verify=verify, timeout=30.0) as http:
            r = await http.post(f"{token.api_url.rstrip('/')}/1.0/cluster/members", json=body)
    except httpx.HTTPError as err:
        mismatch = find_mismatch(err)
        if mismatch is not None:  # not the API the token names: say so, send nothing
            raise ConflictError(
                f"the API at {token.api_url} presents a certificate other than the token's "
                f"({mismatch.seen}): refused"
            ) from None
        raise StoreUnavailableError(f"cannot reach the cluster at {token.api_url}: {err}") from None
    if r.status_code != 200:
        raise _refused(r)
    return JoinGrant.model_validate(r.json())


def _refused(r: httpx.Response) -> VirtfleetError:
    """The cluster's one-line error, with its code, as ours."""
    try:
        error = r.json()["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        message, code = f"the cluster answered {r.status_code}", "internal"
    err = VirtfleetError(f"the cluster refused the join: {message}")
    err.code, err.status = code, r.status_code
    return err


def _with_initial(config: MemberConfig, grant: JoinGrant) -> MemberConfig:
    return MemberConfig(**{**config.__dict__, "initial_cluster": grant.initial_cluster})


async def _promote(member: EtcdMember, grant: JoinGrant) -> None:
    """Make the learner a voting member once it caught up (etcd refuses before)."""
    cluster = EtcdStore(grant.client_urls, tls=member.tls())
    try:
        async with asyncio.timeout(PROMOTE_TIMEOUT_S):
            for _ in itertools.count():
                if await cluster.promote(grant.member_id):
                    return
                await asyncio.sleep(0.2)  # poll: etcd says "not in sync" until it is
    except TimeoutError:
        raise StoreUnavailableError("this host's etcd member did not catch up in time") from None
    finally:
        await cluster.close()


async def _import(backup: Path, member: EtcdMember, renamed: dict[str, str]) -> int:
    source = SQLiteStore(backup)
    target = EtcdStore([member.config.client_url], tls=member.tls())
    try:
        owned, shared = [INSTANCES, IMAGE_FILES], [IMAGES, NETWORKS, MACS]
        return await import_keys(source, target, owned, shared, renamed)
    finally:
        await target.close()
        await source.close()
