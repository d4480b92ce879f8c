"""Typed QMP wrappers for changing a running VM: balloon, vCPU and device hot-plug, throttling.

Owns the QMP vocabulary of live resource changes (QEMU QMP reference: ``balloon``,
``query-balloon``, ``query-hotpluggable-cpus``, ``device_add``/``device_del`` with
``DEVICE_DELETED``, ``blockdev-add``/``blockdev-del``, ``block_resize``,
``block_set_io_throttle``, ``netdev_add``/``netdev_del``, ``qom-get``/``qom-set``)
and undoing a half-done hot-add. Must not decide which change is allowed (the
model's rules and the service do) nor track state beyond its arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from virtfleet.drivers.qemu.backing import chain as backing_chain
from virtfleet.drivers.qemu.blockjobs import BlockJobs
from virtfleet.drivers.qemu.config import file_node
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import ConflictError, InvalidInputError, QMPError, TimeoutError_
from virtfleet.model.instance import DiskLimits, NicSpec

MIB = 1024 * 1024
UNPLUG_TIMEOUT_S = 30.0  # the guest must let go of the device; TCG guests are slow
STATS_POLL_S = 2  # guest memory statistics refresh (virtio-balloon stats queue)
CPU_ID_PREFIX = "vcpu-"
_THROTTLE_KEYS = {
    "iops": "iops_total",
    "iops_rd": "iops_read",
    "iops_wr": "iops_write",
    "bps": "bps_total",
    "bps_rd": "bps_read",
    "bps_wr": "bps_write",
}


def _dicts(cmd: str, reply: object) -> list[dict[str, Any]]:
    if not isinstance(reply, list):
        raise QMPError(f"QMP '{cmd}' failed: unexpected reply shape {type(reply).__name__}")
    return [dict(item) for item in reply if isinstance(item, dict)]


# -- memory ---------------------------------------------------------------------------


async def set_balloon(qmp: QMPSession, target_mib: int) -> None:
    await qmp.execute("balloon", {"value": target_mib * MIB})


async def balloon_stats(qmp: QMPSession) -> dict[str, Any]:
    """Balloon actual size and the guest's own memory statistics (when it reported any)."""
    reply = await qmp.execute("query-balloon")
    actual = int(reply.get("actual", 0)) if isinstance(reply, dict) else 0
    stats: dict[str, Any] = {}
    with contextlib.suppress(QMPError):
        raw = await qmp.execute("qom-get", {"path": "/machine/peripheral/balloon0",
                                            "property": "guest-stats"})  # fmt: skip
        if isinstance(raw, dict) and isinstance(raw.get("stats"), dict):
            stats = {k: v for k, v in raw["stats"].items() if isinstance(v, int) and v >= 0}
    return {"balloon_actual_mib": actual // MIB, "guest_stats": stats}


async def enable_balloon_stats(qmp: QMPSession) -> None:
    """Ask the guest's balloon driver to report memory statistics every few seconds."""
    with contextlib.suppress(QMPError):
        await qmp.execute("qom-set", {"path": "/machine/peripheral/balloon0",
                                      "property": "guest-stats-polling-interval",
                                      "value": STATS_POLL_S})  # fmt: skip


# -- vCPUs ----------------------------------------------------------------------------


async def hotpluggable_cpus(qmp: QMPSession) -> list[dict[str, Any]]:
    """Every possible vCPU slot; present ones carry ``qom-path``. Sorted by topology."""
    slots = _dicts("query-hotpluggable-cpus", await qmp.execute("query-hotpluggable-cpus"))
    order = ("socket-id", "die-id", "cluster-id", "core-id", "thread-id")
    return sorted(slots, key=lambda s: tuple(int(s["props"].get(k, 0)) for k in order))


async def set_vcpus(qmp: QMPSession, count: int, budget: int | None = None) -> int:
    """Plug the lowest free slots or unplug the highest present ones until ``count`` exist;
    at most ``budget`` plugs (None: no limit). Returns how many vCPUs were plugged."""
    slots = await hotpluggable_cpus(qmp)
    present = [s for s in slots if "qom-path" in s]
    wanted = max(0, count - len(present))
    if budget is not None and wanted > budget:
        raise ConflictError(
            f"this QEMU process can create only {budget} more vCPU(s) under TCG (it never "
            "frees a removed vCPU's translation context); the change applies after a restart"
        )
    if wanted:
        for slot in [s for s in slots if "qom-path" not in s][:wanted]:
            props = slot["props"]
            ident = CPU_ID_PREFIX + "-".join(str(props[k]) for k in sorted(props))
            await qmp.execute("device_add", {"driver": slot["type"], "id": ident, **props})
    for slot in reversed(present[count:]):
        if slot is present[0]:
            raise InvalidInputError("the boot vCPU cannot be removed")
        await _unplug_cpu(qmp, str(slot["qom-path"]))
    return wanted


async def _unplug_cpu(qmp: QMPSession, path: str) -> None:
    """``device_del`` a vCPU and wait until its slot is free: QEMU 10 reports only the
    CPU's lapic child in DEVICE_DELETED, so the slot list is the evidence."""
    await qmp.execute("device_del", {"id": path})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNPLUG_TIMEOUT_S
    while loop.time() < deadline:
        slots = await hotpluggable_cpus(qmp)
        if all(s.get("qom-path") != path for s in slots):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError_(f"the guest did not release vCPU {path} within {UNPLUG_TIMEOUT_S:g} s")


async def unplug(qmp: QMPSession, device: str) -> None:
    """``device_del`` and wait for ``DEVICE_DELETED`` (the guest ejected it)."""
    await qmp.execute("device_del", {"id": device})
    while True:
        try:
            event = await qmp.wait_event({"DEVICE_DELETED"}, UNPLUG_TIMEOUT_S)
        except TimeoutError_ as err:
            raise TimeoutError_(
                f"the guest did not release {device} within {UNPLUG_TIMEOUT_S:g} s"
            ) from err
        if device in (event.data.get("device"), event.data.get("path")):
            return


# -- disks ----------------------------------------------------------------------------


async def add_disk(qmp: QMPSession, disk: str, path: Path, bus: str, aio: str = "threads") -> None:
    """Open the qcow2 and its backing files here (QEMU runs chrooted under its own uid and
    opens no path), pass them as fds, add the node and the device."""
    node = f"disk-{disk}"
    async with contextlib.AsyncExitStack() as undo:
        # The fd sets go once the node is open (it holds its own duplicates), added or not:
        # left in QEMU they would pile up with every hot-add.
        async with contextlib.AsyncExitStack() as fdsets:
            file = await _pass_file(qmp, path, os.O_RDWR, fdsets, aio)
            backing: dict[str, object] | None = None
            for below, fmt in reversed(await asyncio.to_thread(backing_chain, path)):
                below_file = await _pass_file(qmp, below, os.O_RDONLY, fdsets, aio)
                backing = {"driver": fmt, "file": below_file, "read-only": True, "backing": backing}
            args = {"driver": "qcow2", "node-name": node, "file": file, "backing": backing}
            if backing is None:
                del args["backing"]  # a qcow2 without one: nothing to say
            await qmp.execute("blockdev-add", args)
        undo.push_async_callback(_quietly, qmp, "blockdev-del", {"node-name": node})
        device = {"driver": "virtio-blk-pci", "drive": node, "id": f"dev-{disk}", "bus": bus}
        await qmp.execute("device_add", device)
        undo.pop_all()


async def _pass_file(
    qmp: QMPSession, path: Path, mode: int, fdsets: contextlib.AsyncExitStack, aio: str
) -> dict[str, object]:
    """``path`` opened here and put in an fdset (removed by ``fdsets``): its ``file`` node."""
    fd = os.open(path, mode | os.O_CLOEXEC)
    try:
        filename = await fdsets.enter_async_context(qmp.passed_fd(fd))
    finally:
        os.close(fd)
    return file_node(filename, aio)


async def remove_disk(qmp: QMPSession, disk: str) -> None:
    """Unplug the disk, then drop its nodes top down: after a live snapshot its device sits
    on an overlay node, with ``disk-<name>`` below it as a backing node."""
    jobs = BlockJobs(qmp)
    chain = await jobs.backing_chain(await jobs.active_node(disk))
    await unplug(qmp, f"dev-{disk}")
    for node in chain:
        if node == f"disk-{disk}":
            await qmp.execute("blockdev-del", {"node-name": node})
            return
        # Only nodes we added can go; QEMU's implicit ones go with their parent.
        await _quietly(qmp, "blockdev-del", {"node-name": node})


async def disk_size(qmp: QMPSession, disk: str) -> int:
    """The virtual size in bytes QEMU sees for the disk's node."""
    for node in _dicts("query-named-block-nodes", await qmp.execute("query-named-block-nodes")):
        if node.get("node-name") == f"disk-{disk}":
            return int(node["image"]["virtual-size"])
    raise InvalidInputError(f"disk {disk!r} is not attached")


async def grow_disk(qmp: QMPSession, disk: str, size_bytes: int) -> None:
    current = await disk_size(qmp, disk)
    if size_bytes < current:
        raise InvalidInputError(
            f"disk {disk!r} is {current / 2**30:g} GiB; shrinking it would destroy data"
        )
    if size_bytes > current:
        await qmp.execute("block_resize", {"node-name": f"disk-{disk}", "size": size_bytes})


async def set_disk_limits(qmp: QMPSession, disk: str, limits: DiskLimits | None) -> None:
    """Throttle the disk in its own throttle group; all zeros remove the throttling."""
    args: dict[str, object] = {"id": f"/machine/peripheral/dev-{disk}/virtio-backend"}
    for key, field in _THROTTLE_KEYS.items():
        args[key] = (getattr(limits, field) if limits else None) or 0
    if limits is not None:
        args["group"] = f"tg-{disk}"
    await qmp.execute("block_set_io_throttle", args)


# -- NICs -----------------------------------------------------------------------------


async def add_nic(qmp: QMPSession, nic_name: str, nic: NicSpec, bus: str) -> None:
    if nic.mode != "user":
        raise InvalidInputError(f"NIC mode {nic.mode!r} cannot be hot-plugged")
    netdev = f"net-{nic_name}"
    await qmp.execute("netdev_add", {"type": "user", "id": netdev, "restrict": nic.restrict})
    device: dict[str, object] = {"driver": "virtio-net-pci", "netdev": netdev, "id": nic_name}
    device["romfile"] = ""  # QEMU is chrooted: no option ROM to read (a hot-added NIC never boots)
    device["bus"] = bus
    if nic.mac:
        device["mac"] = nic.mac
    try:
        await qmp.execute("device_add", device)
    except BaseException:
        await _quietly(qmp, "netdev_del", {"id": netdev})
        raise


async def remove_nic(qmp: QMPSession, nic_name: str) -> None:
    netdev = await qmp.execute("qom-get", {"path": f"/machine/peripheral/{nic_name}",
                                           "property": "netdev"})  # fmt: skip
    await unplug(qmp, nic_name)
    if isinstance(netdev, str) and netdev:
        await qmp.execute("netdev_del", {"id": netdev})


# -- hot-plug slots -------------------------------------------------------------------


async def free_port(qmp: QMPSession, ports: list[str]) -> str:
    """The first of ``ports`` (pcie-root-port ids) with no device behind it."""
    busy: set[str] = set()
    for bus in _dicts("query-pci", await qmp.execute("query-pci")):
        for dev in bus.get("devices", []):
            bridge = dev.get("pci_bridge") or {}
            if dev.get("qdev_id") in ports and bridge.get("devices"):
                busy.add(str(dev["qdev_id"]))
    for port in ports:
        if port not in busy:
            return port
    raise InvalidInputError(
        f"no free hot-plug slot left ({len(ports)} in use); the change applies at the next boot"
    )


async def _quietly(qmp: QMPSession, cmd: str, args: dict[str, object]) -> None:
    with contextlib.suppress(QMPError):
        await qmp.execute(cmd, args)
