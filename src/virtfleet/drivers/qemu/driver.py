"""``QemuDriver``: QEMU virtual machines on this host, one process per VM.

Owns the VM processes, their QMP sessions and runtime records under
``run_root/<name>/``. Turns QMP events and process exits into ``DriverEvent``s.
Never reads or writes the store and never decides policy (restarts, admission):
that is the agent's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from virtfleet.drivers.base import DriverEvent, DriverInfo, EventKind, LaunchContext
from virtfleet.drivers.qemu import process, swtpm
from virtfleet.drivers.qemu.backing import chain as backing_chain
from virtfleet.drivers.qemu.config import Chain, QemuOptions, RunPaths, build_argv
from virtfleet.drivers.qemu.hotplug import LiveResources, hotplug_ports, require, smp_of
from virtfleet.drivers.qemu.live import enable_balloon_stats
from virtfleet.drivers.qemu.qga import GuestAgent
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.drivers.qemu.runtime import RuntimeRecord, load, save
from virtfleet.drivers.qemu.stats import collect
from virtfleet.drivers.qemu.vmsnap import VmSnapshots
from virtfleet.drivers.stats import DriverStats
from virtfleet.errors import (
    GuestAgentError,
    InvalidInputError,
    InvalidStateError,
    ProcessError,
    QMPError,
    VirtfleetError,
)
from virtfleet.model.instance import Accel, InstanceSpec, InstanceStatus, PowerState

log = logging.getLogger(__name__)
QGA_PING_S = 2.0
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin
_QMP_TO_EVENT: dict[str, EventKind] = {
    "STOP": "paused",
    "RESUME": "running",
    "RESET": "reset",
    "POWERDOWN": "powerdown",
    "GUEST_PANICKED": "panicked",
}


@dataclass
class _VM:
    record: RuntimeRecord
    qmp: QMPSession
    paths: RunPaths
    power: PowerState = PowerState.RUNNING
    stopping: bool = False  # we asked it to end: an exit is not a crash
    shutdown_reason: str | None = None
    watcher: asyncio.Task[None] | None = None
    guest_stats_polling: bool = False  # the balloon's guest-stats polling was switched on
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class QemuDriver(LiveResources, VmSnapshots):
    name = "qemu"

    def __init__(self, run_root: Path, qemu_version: str, opts: QemuOptions | None = None) -> None:
        self.run_root = run_root
        self.qemu_version = qemu_version
        self.opts = opts or QemuOptions()
        self._vms: dict[str, _VM] = {}
        self.incoming_once: set[str] = set()  # next start waits for a VM state (-incoming)
        self._events: asyncio.Queue[DriverEvent] = asyncio.Queue()

    def info(self) -> DriverInfo:
        found = shutil.which(self.opts.binary) is not None
        reason = "" if found else f"{self.opts.binary} not found; install QEMU >= 9.0"
        return DriverInfo(self.name, found, reason, {"qemu_version": self.qemu_version})

    def validate(self, spec: InstanceSpec) -> None:
        sock = self.paths(spec.name).serial
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise InvalidInputError(f"run directory path too long for unix sockets: {sock}")
        if not spec.disks and not spec.boot.kernel:
            raise InvalidInputError(f"instance {spec.name!r} has no disk and no kernel to boot")

    def paths(self, name: str) -> RunPaths:
        return RunPaths(self.run_root / name)

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        """Launch QEMU for ``spec``; on any failure nothing is left running."""
        if name_vm := self._vms.get(spec.name):
            raise InvalidStateError(name_vm.power.value, "stopped")
        self.validate(spec)
        paths = self.paths(spec.name)
        process.prepare_run_dir(paths)
        chains = await asyncio.to_thread(_chains, ctx.disks)  # before anything needs undoing
        uid = await self._reserve_uid(spec.name)
        try:
            listener = process.qmp_listener(paths)
        except BaseException:
            await self._free_uid(uid, os.getpid())
            raise
        with listener:  # QEMU holds its own copy once launched
            argv = build_argv(spec, ctx, paths, self.opts, uid, listener.fileno(), chains)
            if spec.name in self.incoming_once:  # a memory snapshot is loaded into it (vmsnap.py)
                self.incoming_once.discard(spec.name)
                argv += ["-incoming", "defer"]
            tpm_pid = None
            try:
                if ctx.tpm_state is not None:  # before QEMU, which connects to it at startup
                    tpm_pid = await swtpm.start(paths, ctx.tpm_state, uid, ctx.cgroup_procs)
                inherit = (listener.fileno(), *_given(ctx.driver_iso_fd))
                pid = await process.launch(argv, paths, ctx.cgroup_procs, inherit)
            except BaseException:
                if tpm_pid is not None:
                    process.kill(tpm_pid)
                await self._free_uid(uid, os.getpid())
                raise
        try:
            await self._hold_uid(uid, spec.name, pid)  # the lease goes to QEMU: it outlives us
            record = RuntimeRecord(
                name=spec.name,
                pid=pid,
                pid_create_time=process.create_time(pid, paths),
                argv=argv,
                qmp_socket=str(paths.qmp),
                serial_socket=str(paths.serial),
                serial_log=str(paths.serial_log),
                vnc_socket=str(paths.vnc),
                qemu_version=self.qemu_version,
                accel=ctx.accel.value,
                accel_reason=ctx.accel_reason,
                machine=spec.machine,
                device_model=spec.device_model.value,
                disks={k: str(v) for k, v in ctx.disks.items()},
                uid=uid,
                swtpm_pid=tpm_pid,
            )
            save(record, paths.record)
            vm = await self._attach(record, paths, fresh=True)
            await enable_balloon_stats(vm.qmp)
        except BaseException:
            process.kill(pid)
            if tpm_pid is not None:  # QEMU may have died before connecting to it
                process.kill(tpm_pid)
            paths.record.unlink(missing_ok=True)
            await self._free_uid(uid, pid)
            raise
        return self._status(self._vms[spec.name])

    async def _reserve_uid(self, name: str) -> int | None:
        pool = self.opts.uids
        return await asyncio.to_thread(pool.reserve, name) if pool is not None else None

    async def _hold_uid(self, uid: int | None, name: str, pid: int) -> None:
        if self.opts.uids is not None and uid is not None:
            await asyncio.to_thread(self.opts.uids.hold, uid, pid, name)

    async def _free_uid(self, uid: int | None, pid: int) -> None:
        if self.opts.uids is not None and uid is not None:
            await asyncio.to_thread(self.opts.uids.release, uid, pid)

    async def _attach(self, record: RuntimeRecord, paths: RunPaths, fresh: bool = False) -> _VM:
        qmp = await (self._connect_fresh(record.pid, paths) if fresh else self._connect(paths))
        try:
            state = await qmp.query_status()
        except BaseException:
            await qmp.close()
            raise
        vm = _VM(record, qmp, paths, PowerState.PAUSED if state == "paused" else PowerState.RUNNING)
        self._vms[record.name] = vm
        vm.watcher = asyncio.create_task(self._watch(vm), name=f"qmp-events-{record.name}")
        return vm

    async def _connect(self, paths: RunPaths) -> QMPSession:
        return await QMPSession.connect(paths.qmp, timeout_s=30.0, log_path=paths.qmp_log)

    async def _connect_fresh(self, pid: int, paths: RunPaths) -> QMPSession:
        """Connect to a QEMU that is starting up, failing at once if it exits instead."""
        connect = asyncio.create_task(self._connect(paths))
        exited = asyncio.create_task(process.wait_exit(pid))
        await asyncio.wait({connect, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if connect.done():
            return connect.result()
        connect.cancel()
        with contextlib.suppress(asyncio.CancelledError, VirtfleetError):
            await connect
        raise ProcessError(f"QEMU exited while starting: {process.tail(paths.stderr)}")

    async def _watch(self, vm: _VM) -> None:
        """Follow QMP events until QEMU closes the socket, then classify the exit."""
        try:
            async for event in vm.qmp.events():
                self._on_qmp_event(vm, event.name, event.data)
        except VirtfleetError as err:
            log.warning("QMP event stream of %s ended: %s", vm.record.name, err.message)
        await process.wait_gone(vm.record.pid, 5.0)
        if process.pid_running(vm.record.pid):
            # The socket closed but QEMU lives on (wedged): end it rather than leak it.
            process.kill(vm.record.pid)
            await process.wait_gone(vm.record.pid, 5.0)
        self._finish(vm)

    def _on_qmp_event(self, vm: _VM, name: str, data: dict[str, object]) -> None:
        if name == "SHUTDOWN":
            vm.shutdown_reason = str(data.get("reason", "unknown"))
            return
        kind = _QMP_TO_EVENT.get(name)
        if kind is None:
            return
        if kind == "paused":
            vm.power = PowerState.PAUSED
        elif kind == "running":
            vm.power = PowerState.RUNNING
        self._emit(vm.record.name, kind, name.lower())

    def _finish(self, vm: _VM) -> None:
        name = vm.record.name
        if self._vms.get(name) is vm:
            del self._vms[name]
        vm.paths.record.unlink(missing_ok=True)
        if self.opts.uids is not None and vm.record.uid is not None:
            self.opts.uids.release(vm.record.uid, vm.record.pid)  # one small locked unlink
        vm.gone.set()
        if vm.stopping:
            self._emit(name, "stopped", vm.shutdown_reason or "stopped by request", True)
        elif vm.shutdown_reason in ("guest-shutdown", "host-qmp-quit"):
            self._emit(name, "stopped", vm.shutdown_reason)
        else:
            why = vm.shutdown_reason or "QEMU exited without a shutdown (killed or crashed)"
            self._emit(name, "crashed", why)

    def _emit(self, name: str, kind: EventKind, reason: str, requested: bool = False) -> None:
        self._events.put_nowait(DriverEvent(name, kind, reason, requested))

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        """Power off: ACPI power button, then after ``timeout_s`` (or at once with force) kill."""
        vm = self._vms.get(name)
        if vm is None:
            return
        vm.stopping = True
        if not force:
            try:
                await self._request_shutdown(vm)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(vm.gone.wait(), timeout_s)
                    return
            except asyncio.CancelledError:
                vm.stopping = vm.gone.is_set()  # called off: a later exit is the guest's own
                raise
        with contextlib.suppress(QMPError):
            await asyncio.wait_for(vm.qmp.quit(), 2.0)
        if not await process.wait_gone(vm.record.pid, 3.0):
            process.kill(vm.record.pid)
        await vm.gone.wait()

    async def _request_shutdown(self, vm: _VM) -> None:
        """Through the guest agent when it answers a ping, else the ACPI power button."""
        if vm.paths.qga.exists():
            qga = GuestAgent(vm.paths.qga, timeout_s=QGA_PING_S)
            try:
                await qga.ping()
                await qga.shutdown()
                log.info("%s: shutdown requested through the guest agent", vm.record.name)
                return
            except GuestAgentError as err:
                log.info("%s: guest agent unavailable (%s); using ACPI", vm.record.name, err)
        with contextlib.suppress(QMPError):
            await vm.qmp.system_powerdown()

    async def pause(self, name: str) -> None:
        vm = self._require(name, PowerState.RUNNING)
        await vm.qmp.stop()
        vm.power = PowerState.PAUSED

    async def resume(self, name: str) -> None:
        vm = self._require(name, PowerState.PAUSED)
        await vm.qmp.cont()
        vm.power = PowerState.RUNNING

    async def reset(self, name: str) -> None:
        vm = self._vms.get(name)
        if vm is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        await vm.qmp.system_reset()

    def _monitor(self, name: str, *, running: bool = True) -> tuple[QMPSession, list[str]]:
        vm = self._vms.get(name)
        if vm is None:
            raise InvalidStateError("stopped", "running")
        require(vm.power.value, running)
        return vm.qmp, hotplug_ports(vm.record.argv)

    def _vcpu_budget(self, name: str) -> int | None:
        vm = self._vms.get(name)
        if vm is None or vm.record.accel != Accel.TCG.value:
            return None
        boot, top = smp_of(vm.record.argv)
        return max(0, top - boot - vm.record.vcpus_hotplugged)

    def _vcpus_created(self, name: str, count: int) -> None:
        vm = self._vms.get(name)
        if vm is not None and count:
            vm.record.vcpus_hotplugged += count
            save(vm.record, vm.paths.record)

    def _require(self, name: str, state: PowerState) -> _VM:
        vm = self._vms.get(name)
        current = vm.power if vm else PowerState.STOPPED
        if vm is None or current is not state:
            raise InvalidStateError(current.value, state.value)
        return vm

    async def delete(self, name: str) -> None:
        await self.stop(name, force=True)
        shutil.rmtree(self.paths(name).root, ignore_errors=True)

    async def status(self, name: str) -> InstanceStatus:
        vm = self._vms.get(name)
        return self._status(vm) if vm else InstanceStatus(power=PowerState.STOPPED)

    def _status(self, vm: _VM) -> InstanceStatus:
        rec = vm.record
        return InstanceStatus(
            power=vm.power,
            pid=rec.pid,
            accel=Accel(rec.accel),
            accel_reason=rec.accel_reason,
            qemu_version=rec.qemu_version,
            started_at=rec.started_at,
        )

    async def adopt(self, name: str) -> InstanceStatus:
        """Re-attach to a QEMU that outlived the agent; never starts anything."""
        if vm := self._vms.get(name):
            return self._status(vm)
        paths = self.paths(name)
        record = load(paths.record)
        if record is None:
            return InstanceStatus(power=PowerState.STOPPED)
        if not record.process_alive():
            paths.record.unlink(missing_ok=True)
            return InstanceStatus(
                power=PowerState.CRASHED, reason="QEMU exited while the agent was down"
            )
        if record.uid is not None:  # the lease may be gone (e.g. its directory cleared)
            await self._hold_uid(record.uid, name, record.pid)
        return self._status(await self._attach(record, paths))

    async def list(self) -> list[str]:
        if not self.run_root.exists():
            return []
        return sorted(p.parent.name for p in self.run_root.glob("*/runtime.json"))

    async def events(self) -> AsyncIterator[DriverEvent]:
        while True:
            yield await self._events.get()

    def console_socket(self, name: str) -> Path | None:
        return self.paths(name).serial if name in self._vms else None

    def console_log(self, name: str) -> Path | None:
        path = self.paths(name).serial_log
        return path if path.exists() else None

    async def screendump(self, name: str, path: Path) -> None:
        """Write the VM's screen as PNG to ``path`` (opened here, passed to QEMU as an fd)."""
        vm = self._vms.get(name)
        if vm is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            await vm.qmp.screendump_fd(fd)
        finally:
            os.close(fd)

    def vnc_socket(self, name: str) -> Path | None:
        """The VNC server's Unix socket of a running or paused VM, else None."""
        vm = self._vms.get(name)
        if vm is None or not vm.record.vnc_socket:
            return None  # stopped, or launched before VMs had a display
        return Path(vm.record.vnc_socket)

    async def screenshot(self, name: str) -> bytes:
        """The VM's screen as PNG, dumped into its run directory and removed after reading."""
        path = self.paths(name).root / f"screendump-{secrets.token_hex(8)}.png"
        try:
            await self.screendump(name, path)
            return await asyncio.to_thread(path.read_bytes)
        finally:
            path.unlink(missing_ok=True)

    async def stats(self, name: str) -> DriverStats:
        """Block, balloon and NIC counters over QMP (``SupportsStats``)."""
        vm = self._vms.get(name)
        if vm is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        found = await collect(vm.qmp, vm.record.argv, vm.guest_stats_polling)
        vm.guest_stats_polling = True
        return found

    async def close(self) -> None:
        """Detach from every VM, leaving the processes running (they outlive the agent)."""
        for vm in list(self._vms.values()):
            if vm.watcher:
                vm.watcher.cancel()
            await vm.qmp.close()
        self._vms.clear()


def _chains(disks: dict[str, Path]) -> dict[str, Chain]:
    """Each disk's backing files, from the image headers (build_argv opens them explicitly)."""
    return {name: backing_chain(path) for name, path in disks.items()}


def _given(fd: int | None) -> tuple[int, ...]:
    return () if fd is None else (fd,)
