"""QMP block-layer vocabulary for snapshots and backups, over an open ``QMPSession``.

Owns the QMP commands of the block layer the platform uses: finding a disk's
active node and its backing chain, ``blockdev-add``/``-del``, external
snapshots (``blockdev-snapshot`` in one ``transaction``), persistent dirty
bitmaps, image fleecing (a ``sync=none`` backup job into an overlay of the
running disk) exported by QEMU's NBD server,
``block-stream`` and waiting for jobs with progress. Errors come translated by
the session. Must not decide what to snapshot or back up, nor touch files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtfleet.drivers.qemu.config import file_node
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import DriverError, NotFoundError, QMPError

JOB_POLL_S = 0.1
NBD_FD = "vf-nbd"
Progress = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Bitmap:
    name: str
    recording: bool
    persistent: bool
    inconsistent: bool
    count: int  # dirty bytes


@dataclass(frozen=True)
class Fleece:
    """One disk of a pull-mode backup: its active node, fleecing node, job and bitmaps."""

    node: str
    target: str
    job: str
    new_bitmap: str
    since: str | None  # the previous backup's bitmap; None: full backup
    frozen: str  # since's copy frozen at the point in time (exported over NBD)


class BlockJobs:
    def __init__(self, qmp: QMPSession) -> None:
        self.qmp = qmp

    async def _run(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return await self.qmp.execute(cmd, args)

    # -- nodes -------------------------------------------------------------------------

    async def active_node(self, disk: str) -> str:
        """The node a guest disk device (id ``dev-<disk>``) currently writes to."""
        for dev in await self._run("query-block"):
            parts = str(dev.get("qdev", "")).split("/")
            if f"dev-{disk}" in parts and dev.get("inserted"):
                return str(dev["inserted"]["node-name"])
        raise NotFoundError(f"disk {disk!r} is not attached to the running VM")

    async def backing_chain(self, node: str) -> list[str]:
        """Format nodes from ``node`` down its backing chain (``node`` first)."""
        graph = await self._run("x-debug-query-block-graph")
        names = {n["id"]: n["name"] for n in graph["nodes"]}
        ids = {v: k for k, v in names.items()}
        backing = {e["parent"]: e["child"] for e in graph["edges"] if e["name"] == "backing"}
        chain, cur = [node], ids.get(node)
        while cur in backing:
            cur = backing[cur]
            chain.append(names[cur])
        return chain

    async def node_names(self) -> list[str]:
        nodes = await self._run("query-named-block-nodes", {"flat": True})
        return [str(n["node-name"]) for n in nodes]

    async def add_qcow2(
        self, node: str, path: Path, backing: str | None = None, aio: str = "threads"
    ) -> None:
        """Open ``path`` as a qcow2 node over the node ``backing`` (None: no backing). QEMU runs
        unprivileged and cannot open our files: the file goes over as a descriptor (``add-fd``)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            async with self.qmp.passed_fd(fd) as filename:  # the node keeps its own duplicate
                file = file_node(filename, aio)
                args = {"driver": "qcow2", "node-name": node, "file": file, "backing": backing}
                await self._run("blockdev-add", args)
        finally:
            os.close(fd)

    async def delete_node(self, node: str) -> None:
        await self._run("blockdev-del", {"node-name": node})

    # -- snapshots ---------------------------------------------------------------------

    async def snapshot(self, pairs: list[tuple[str, str]]) -> None:
        """Make each overlay node the new top of its node, all at one instant."""
        actions = [
            {"type": "blockdev-snapshot", "data": {"node": node, "overlay": overlay}}
            for node, overlay in pairs
        ]
        await self._run("transaction", {"actions": actions})

    async def stream(
        self,
        job_id: str,
        top: str,
        base: str | None,
        progress: Progress,
        backing_file: str | None = None,
    ) -> None:
        """Pull the data of the nodes between ``top`` and ``base`` into ``top`` and drop them;
        ``backing_file`` is the path written into ``top`` (nodes may be open under old names)."""
        args: dict[str, Any] = {"job-id": job_id, "device": top, "auto-dismiss": False}
        if base is not None:
            args["base-node"] = base
        if backing_file is not None and base is not None:
            args["backing-file"] = backing_file
        await self._run("block-stream", args)
        await self.wait_job(job_id, progress)

    # -- bitmaps -----------------------------------------------------------------------

    async def bitmaps(self, node: str) -> list[Bitmap]:
        for n in await self._run("query-named-block-nodes", {"flat": True}):
            if n.get("node-name") == node:
                return [
                    Bitmap(
                        b["name"],
                        bool(b.get("recording")),
                        bool(b.get("persistent")),
                        bool(b.get("inconsistent")),
                        int(b.get("count", 0)),
                    )
                    for b in n.get("dirty-bitmaps", [])
                ]
        raise NotFoundError(f"block node {node!r} not found")

    async def add_bitmap(self, node: str, name: str) -> None:
        """A new, empty, persistent bitmap recording ``node``'s writes from now on."""
        await self._run("block-dirty-bitmap-add", {"node": node, "name": name, "persistent": True})

    async def merge_bitmap(self, node: str, name: str, source_node: str) -> None:
        """Add the bits of ``source_node``'s bitmap ``name`` to ``node``'s of the same name."""
        args = {"node": node, "target": name, "bitmaps": [{"node": source_node, "name": name}]}
        await self._run("block-dirty-bitmap-merge", args)

    async def remove_bitmap(self, node: str, name: str) -> None:
        await self._run("block-dirty-bitmap-remove", {"node": node, "name": name})

    # -- backup: fleecing + NBD export (pull mode) ---------------------------------------

    async def start_fleecing(self, disks: list[Fleece]) -> None:
        """One transaction, one instant for all disks: per disk a new persistent bitmap, a
        frozen copy of ``since`` (NBD exports only disabled bitmaps) and a ``sync=none`` backup
        job that copies old data into the fleecing node before the guest overwrites it."""
        actions: list[dict[str, Any]] = []
        for f in disks:
            add = {"node": f.node, "name": f.new_bitmap, "persistent": True}
            actions.append({"type": "block-dirty-bitmap-add", "data": add})
            if f.since is not None:
                frozen = {"node": f.node, "name": f.frozen, "persistent": False, "disabled": True}
                merge = {"node": f.node, "target": f.frozen, "bitmaps": [f.since]}
                actions.append({"type": "block-dirty-bitmap-add", "data": frozen})
                actions.append({"type": "block-dirty-bitmap-merge", "data": merge})
            job = {"job-id": f.job, "device": f.node, "target": f.target, "sync": "none"}
            actions.append({"type": "blockdev-backup", "data": {**job, "auto-dismiss": False}})
        await self._run("transaction", {"actions": actions})

    async def serve_nbd(self, listener: socket.socket) -> None:
        """Start QEMU's NBD server on our listening socket (QEMU cannot open our paths)."""
        async with self.qmp.passed_fd(listener.fileno(), NBD_FD) as name:
            await self._run("nbd-server-start", {"addr": {"type": "fd", "data": {"str": name}}})

    async def stop_nbd(self) -> None:
        """Drop every export and stop the NBD server (both may be gone already)."""
        for export in await self._run("query-block-exports"):
            with contextlib.suppress(QMPError):
                await self._run("block-export-del", {"id": export["id"], "mode": "hard"})
        with contextlib.suppress(QMPError):
            await self._run("nbd-server-stop")
        for _ in range(1000):  # deletion finishes asynchronously (at once without clients)
            if not await self._run("query-block-exports"):
                return
            await asyncio.sleep(0.01)
        raise DriverError("QEMU did not drop its NBD exports within 10 s")

    async def export(self, export_id: str, node: str, bitmap: str | None) -> None:
        """Export ``node`` read-only under the name ``export_id``, with ``bitmap`` if given."""
        args: dict[str, Any] = {"type": "nbd", "id": export_id, "node-name": node}
        args.update(name=export_id, writable=False, bitmaps=[bitmap] if bitmap else [])
        await self._run("block-export-add", args)

    async def jobs(self) -> list[dict[str, Any]]:
        return list(await self._run("query-jobs"))

    async def cancel_job(self, job_id: str) -> None:
        """Cancel (if running) and dismiss a job; a job already gone is fine."""
        for job in await self.jobs():
            if job["id"] != job_id:
                continue
            if job["status"] not in ("concluded", "null"):
                await self._run("job-cancel", {"id": job_id})
                await self._until_concluded(job_id)
            await self._run("job-dismiss", {"id": job_id})

    async def _until_concluded(self, job_id: str) -> dict[str, Any]:
        while True:
            job = next((j for j in await self.jobs() if j["id"] == job_id), None)
            if job is None:
                raise DriverError(f"block job {job_id} vanished")
            if job["status"] == "concluded":
                return job
            await asyncio.sleep(0.01)  # a cancelled job concludes within milliseconds

    async def wait_job(self, job_id: str, progress: Progress) -> None:
        """Report progress until the job concludes, dismiss it, raise its error if it failed."""
        while True:
            job = next((j for j in await self.jobs() if j["id"] == job_id), None)
            if job is None:
                raise DriverError(f"block job {job_id} vanished")
            total = int(job.get("total-progress") or 0)
            await progress(int(job.get("current-progress") or 0) / total if total else 0.0)
            if job["status"] == "concluded":
                break
            await asyncio.sleep(JOB_POLL_S)
        await self._run("job-dismiss", {"id": job_id})
        if job.get("error"):
            raise QMPError(f"block job {job_id} failed: {job['error']}", error_desc=job["error"])
