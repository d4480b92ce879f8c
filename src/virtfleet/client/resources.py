"""Calls of the resource endpoints: change a VM's resources, its live view, host capacity.

Kept beside ``calls.py`` (same ``Call`` shape, sent with ``Client.call``) so the
endpoint list there stays untouched. Must not do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from virtfleet.client.calls import Call, inst, one, raw

if TYPE_CHECKING:
    from virtfleet.model.capacity import Capacity
    from virtfleet.model.operation import Operation


def patch_instance(name: str, body: Mapping[str, Any]) -> Call[Operation]:
    """PATCH /1.0/instances/{name}: a ``ResourcePatch`` body; 202 with the operation."""
    return Call("PATCH", inst(name), one("model.operation:Operation"), json=dict(body))


def instance_resources(name: str) -> Call[dict[str, Any]]:
    return Call("GET", f"{inst(name)}/resources", raw)


def host_capacity() -> Call[Capacity]:
    return Call("GET", "/1.0/host/capacity", one("model.capacity:Capacity"))
