"""``Call``s of the container-only endpoints (exec, limits, rootfs snapshots). No I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtfleet.client.calls import Call, inst, one, raw, segment

if TYPE_CHECKING:
    from virtfleet.model.container import ExecOutput
    from virtfleet.model.instance import InstanceSpec


def exec_in(name: str, command: list[str], timeout_s: float) -> Call[ExecOutput]:
    body = {"command": command, "timeout_s": timeout_s}
    return Call(
        "POST",
        f"{inst(name)}/exec",
        one("model.container:ExecOutput"),
        json=body,
        timeout_s=timeout_s + 30,
    )


def set_limits(name: str, changes: dict[str, Any]) -> Call[InstanceSpec]:
    return Call("PATCH", f"{inst(name)}/limits", one("model.instance:InstanceSpec"), json=changes)


def list_snapshots(name: str) -> Call[list[str]]:
    return Call("GET", f"{inst(name)}/rootfs-snapshots", raw)


def create_snapshot(name: str, snap: str) -> Call[list[str]]:
    return Call("POST", f"{inst(name)}/rootfs-snapshots", raw, json={"name": snap})


def restore_snapshot(name: str, snap: str) -> Call[dict[str, Any]]:
    path = f"{inst(name)}/rootfs-snapshots/{segment(snap, 'snapshot name')}/restore"
    return Call("POST", path, raw, timeout_s=600)


def delete_snapshot(name: str, snap: str) -> Call[Any]:
    path = f"{inst(name)}/rootfs-snapshots/{segment(snap, 'snapshot name')}"
    return Call("DELETE", path, lambda _: None, binary=True)  # 204: no body
