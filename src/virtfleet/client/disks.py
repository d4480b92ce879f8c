"""Calls of the ``/1.0/disks`` endpoints (kept disk directories), for ``Client.call``.

Must not do I/O; names are checked here so a bad one never becomes a different URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtfleet.client.calls import Call, many, raw, segment

if TYPE_CHECKING:
    from virtfleet.model.disks import DiskDir


def list_disks(orphaned: bool = False) -> Call[list[DiskDir]]:
    return Call(
        "GET", "/1.0/disks", many("model.disks:DiskDir"), params={"orphaned": str(orphaned).lower()}
    )


def delete_disks(name: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/1.0/disks/{segment(name, 'instance name')}", raw)
