"""Conditional changes of an instance: "only if it is still as I last saw it".

Owns ``Version`` (the store revisions of an instance's spec and desired state,
which the API shows as its ETag) and ``claim``: the compare-and-swap that makes
a conditional change atomic. A claim rewrites the desired state unchanged in
one transaction guarded by both revisions, so of two requests holding the same
version exactly one wins and the other gets ``PreconditionFailedError`` with
nothing written; the winner's change then follows through the operation queue
as usual. Must not know HTTP header syntax (the API parses ETags).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from virtfleet.errors import PreconditionFailedError
from virtfleet.state.keys import instance_key
from virtfleet.state.repos import InstanceRecord
from virtfleet.state.store import Compare, Put, StateStore


@dataclass(frozen=True)
class Version:
    """Which write of the spec and of the desired state an instance view reflects."""

    spec_revision: int
    desired_revision: int


# The versions a conditional request accepts; None = unconditional (no If-Match, or "*").
IfMatch = Collection[Version] | None


def version_of(rec: InstanceRecord) -> Version:
    return Version(rec.spec_revision, rec.desired_revision)


async def claim(store: StateStore, rec: InstanceRecord, if_match: IfMatch) -> None:
    """Raise ``PreconditionFailedError`` unless ``rec`` is at a version in ``if_match``
    and still is when its desired state is rewritten (atomically, by revision)."""
    if if_match is None:
        return
    version = version_of(rec)
    if version not in if_match:
        raise stale(rec.name)
    desired = instance_key(rec.name, "desired")
    held = await store.txn(
        [
            Compare(instance_key(rec.name, "spec"), version.spec_revision),
            Compare(desired, version.desired_revision),
        ],
        [Put(desired, rec.desired.model_dump_json().encode())],
    )
    if not held:
        raise stale(rec.name)


def stale(name: str) -> PreconditionFailedError:
    return PreconditionFailedError(
        f"instance {name!r} changed since the version given in If-Match; read it again"
    )
