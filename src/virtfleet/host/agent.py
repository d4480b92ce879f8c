"""The host agent: drives this host's instances towards their desired state.

It watches the instances' keys in the store; when an instance's desired
``generation`` moves past the status's ``observed_generation`` it carries the
request out through the driver (start, stop, pause, resume, restart, delete)
and writes the outcome back (``observed_generation``, ``error_*``). It turns
driver events into status changes and events, applies restart policies, and at
start re-adopts processes that outlived it. The agent is the only writer of
``InstanceStatus``; it never serves HTTP and never changes specs.

It acts only on the instances this host owns (their ``owner`` key), and every
status write is conditional on the ownership it read (``host.ownership``). When an
instance's epoch moves to another host, it stops its local copy and records why
(event ``instance.fenced``, status reason); the new owner takes an instance over only
once the previous owner's status no longer shows a live copy (or that host is offline).
A record owned elsewhere is never adopted, stopped or rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from virtfleet.drivers.base import (
    Driver,
    DriverEvent,
    LaunchContext,
    SupportsGraphics,
    SupportsLiveResources,
)
from virtfleet.errors import ConflictError, HostError, InvalidStateError, VirtfleetError
from virtfleet.host.disks import DiskManager
from virtfleet.host.nics import NicPlumber
from virtfleet.host.ownership import FencedOut, Fences
from virtfleet.host.resources import LiveApplier, cgroup_limits, launched
from virtfleet.model.event import Event
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import (
    Accel,
    DesiredPower,
    DesiredState,
    InstanceSpec,
    InstanceStatus,
    PowerState,
    RestartPolicy,
)
from virtfleet.network.base import NetworkHost
from virtfleet.state.follow import follow
from virtfleet.state.hosts import HostRepo
from virtfleet.state.keys import ALIVE, HOSTS, INSTANCES, instance_name_of
from virtfleet.state.repos import EventLog, InstanceRecord, InstanceRepo
from virtfleet.state.store import Put, StateStore, WatchEvent
from virtfleet.util.cgroups import InstanceCgroup

log = logging.getLogger(__name__)
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A start over sooner never shows STARTING (a VM's takes seconds; a container's ~30 ms,
# up to ~100 ms on a busy host). Written while runc ran, that write and the waiters it
# woke made runc ~1 ms slower here.
STARTING_AFTER_S = 0.25


@dataclass
class AgentConfig:
    disks: DiskManager  # the host's one DiskManager (built in the composition root)
    cgroups: Any = None  # util.cgroups.CgroupManager, or None to run without cgroups
    networks: NetworkHost | None = None  # virtual networks (taps, reconciliation); None: none
    host_id: str = ""  # this host's id (state.identity): the agent acts on what it owns


class Agent:
    def __init__(
        self,
        store: StateStore,
        driver: Driver,
        facts: HostFacts,
        events: EventLog,
        config: AgentConfig,
    ) -> None:
        self.repo = InstanceRepo(store)
        self.store = store
        self.driver = driver
        self.facts = facts
        self.events = events
        self.disks = config.disks
        self.cgroups = config.cgroups
        self.nics = NicPlumber(store, config.networks, config.host_id, events)
        self.host_id = config.host_id
        self.fences = Fences(self.repo, HostRepo(store), config.host_id)
        self._locks: dict[str, asyncio.Lock] = {}
        self._cgroups: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[Any]] = {}  # reconciles carrying out a stop

    # -- lifecycle of the agent itself ---------------------------------------------------

    async def start(self, host_booted: bool = False) -> None:
        """Re-adopt what runs, then follow the store and the driver. ``host_booted``: the
        host rebooted since the last start, so nothing that ran then runs now, and no
        restart policy applies (the boot sequence, ``service.boot``, decides what starts)."""
        revision = await self.store.revision()
        for rec in await self.repo.list():
            if not self.fences.owns(rec):
                await self._fence_off(rec)  # a local copy of what is not ours: stopped
            elif rec.status.host in (None, self.host_id):
                self.fences.hold(rec)
                await self._adopt(rec, host_booted)
            # else another host wrote it last: the reconcile scheduled below takes it over
        await self._remove_orphans()
        await self.nics.reconcile([r for r in await self.repo.list() if self.fences.owns(r)])
        self._tasks = [
            *self.nics.tasks(),
            asyncio.create_task(self._follow_store(revision), name="agent-store"),
            asyncio.create_task(self._follow_hosts(revision), name="agent-hosts"),
            asyncio.create_task(self._follow_driver(), name="agent-driver"),
        ]
        for rec in await self.repo.list():
            if self.fences.owns(rec):
                self._schedule(rec.name)

    async def stop(self) -> None:
        """Stop following; instances keep running (they outlive the agent)."""
        for task in [*self._tasks, *self._pending.values()]:
            task.cancel()
        for task in [*self._tasks, *self._pending.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.driver.close()
        await asyncio.to_thread(self._tidy_cgroups)

    def _tidy_cgroups(self) -> None:
        """rmdir the instance cgroups no process is in any more, and then the parent if
        nothing is left in it: a running VM keeps its own (a restarted agent takes it up
        again), and nothing of a stopped daemon stays behind in the hierarchy."""
        if not self.cgroups:
            return
        for name, cgroup in list(self._cgroups.items()):
            if not cgroup.pids() and cgroup.remove(timeout_s=0):
                del self._cgroups[name]
        self.cgroups.remove_parent_if_empty()

    async def _adopt(self, rec: InstanceRecord, host_booted: bool = False) -> None:
        try:
            found = await self.driver.adopt(rec.name)
        except VirtfleetError as err:
            found = InstanceStatus(power=PowerState.CRASHED, reason=f"re-adoption failed: {err}")
        if host_booted and found.power in (PowerState.CRASHED, PowerState.STOPPED):
            # The host went down, not the guest: stopped, and no crash for a policy to answer.
            found = InstanceStatus(power=PowerState.STOPPED, reason="host rebooted")
        wanted = rec.desired.power in (DesiredPower.RUNNING, DesiredPower.PAUSED)
        if found.power is PowerState.CRASHED and not wanted:
            found = found.model_copy(update={"power": PowerState.STOPPED})
        status = rec.status.model_copy(
            update={
                "power": found.power,
                "pid": found.pid,
                "accel": found.accel or rec.status.accel,
                "reason": found.reason or ("re-adopted" if found.pid else rec.status.reason),
                "exit_code": rec.status.exit_code if found.exit_code is None else found.exit_code,
            }
        )
        if found.power in (PowerState.RUNNING, PowerState.PAUSED) and self._vm_cgroups(rec.spec):
            self._cgroups[rec.name] = self.cgroups.create(rec.name, **cgroup_limits(rec.spec))
        await self._write_status(rec.name, status)
        if found.power is PowerState.CRASHED:
            await self._emit("instance.crashed", rec.name, found.reason)
            self._after_exit(rec, crashed=True)
        elif found.exit_code is not None and wanted:  # an app's clean exit while we were down
            await self._emit("instance.stopped", rec.name, found.reason)
            self._after_exit(rec, crashed=False)

    async def _remove_orphans(self) -> None:
        known = {rec.name for rec in await self.repo.list()}
        for name in await self.driver.list():
            if name not in known:
                log.warning("removing orphan runtime of %s", name)
                await self.driver.delete(name)

    # -- following the store -------------------------------------------------------------

    async def _follow_store(self, revision: int) -> None:
        """Desired-state and ownership changes; after a gap (etcd compacted or out of
        reach) the changed keys are replayed, so no request is lost."""
        async for change in follow(self.store, INSTANCES, revision, "agent"):
            name = instance_name_of(change.key)
            part = change.key.rsplit("/", 1)[1]
            if name and change.type == "put" and part == "desired" and self.fences.held(name):
                self._call_off_stop(name, change.value)
                self._schedule(name)  # another host's request is that host's to carry out
            elif name and part == "owner":
                self._schedule(name)  # moved here (take over) or away (fence off)
            elif name and part == "status" and name in self.fences.waiting:
                self._schedule(name)  # the previous owner may have stopped its copy

    async def _follow_hosts(self, revision: int) -> None:
        """A host whose lease lapsed runs nothing any more: take over what waited on it."""
        async for change in follow(self.store, HOSTS, revision, "agent", self._recheck):
            if change.type == "delete" and change.key.endswith(f"/{ALIVE}"):
                for name in list(self.fences.waiting):
                    self._schedule(name)

    async def _recheck(self, _after: int) -> tuple[int, list[WatchEvent]]:
        """After a gap in the hosts watch: a lease may have lapsed meanwhile."""
        revision = await self.store.revision()
        for name in list(self.fences.waiting):
            self._schedule(name)
        return revision, []

    def _schedule(self, name: str, delay_s: float = 0.0) -> None:
        """Reconcile ``name`` soon; reconciles of one instance never overlap."""
        task = asyncio.create_task(self._reconcile_later(name, delay_s), name=f"reconcile-{name}")
        self._pending[f"{name}#{id(task)}"] = task
        task.add_done_callback(lambda t: self._pending.pop(f"{name}#{id(t)}", None))

    async def _reconcile_later(self, name: str, delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        async with self.lock(name):
            rec = await self.repo.find(name)
            if rec is None:
                return
            try:
                if not self.fences.owns(rec):
                    await self._fence_off(rec)
                elif self.fences.current(rec):
                    await self._reconcile(rec)
                elif taken := await self._take_over(rec):
                    await self._reconcile(taken, converge=True)
            except FencedOut:
                self._schedule(name)  # moved while we acted: fence off what runs here
            except Exception:
                log.exception("reconcile of %s failed unexpectedly", name)

    async def _take_over(self, rec: InstanceRecord) -> InstanceRecord | None:
        """Start acting under ``rec``'s (new) ownership; the record to converge, or None
        while the previous owner may still run it (a status or host change retries)."""
        if await self.fences.previous_runs(rec):
            self.fences.waiting.add(rec.name)
            return None
        previous = rec.status.host
        self.fences.hold(rec)
        if previous in (None, self.host_id):
            return rec  # ours already (created here, or back before anyone wrote)
        assert rec.owner is not None
        found = await self.driver.adopt(rec.name)
        live = found.power in (PowerState.RUNNING, PowerState.PAUSED)
        why = f"taken over from host {previous} (epoch {rec.owner.epoch})"
        update: dict[str, Any] = {"power": found.power if live else PowerState.STOPPED}
        update.update(pid=found.pid, applied=rec.status.applied if live else None, reason=why)
        await self._write_status(rec.name, rec.status.model_copy(update=update))
        await self._emit("instance.taken_over", rec.name, why)
        return await self.repo.get(rec.name)

    async def _fence_off(self, rec: InstanceRecord) -> None:
        """``rec`` is not ours: stop a local copy of it if there is one, and record why
        (an event; the status only while it is still this host's). Otherwise nothing."""
        held = self.fences.held(rec.name)
        self.fences.drop(rec.name)
        if rec.name not in await self.driver.list():
            return
        found = await self.driver.adopt(rec.name)  # attach, to be able to stop it
        if not held and found.power not in (PowerState.RUNNING, PowerState.PAUSED):
            return
        owner = f"host {rec.owner.host} (epoch {rec.owner.epoch})" if rec.owner else "no host"
        why = f"stopped here: ownership moved to {owner}"
        await self.driver.stop(rec.name, force=False, timeout_s=rec.desired.timeout_s)
        await self._release_cgroup(rec.name)
        await self.nics.unplug(rec.name)
        log.warning("%s: %s", rec.name, why)
        update = {"power": PowerState.STOPPED, "pid": None, "applied": None, "reason": why}
        stopped = rec.status.model_copy(update={**update, "updated_at": datetime.now(UTC)})
        await self.fences.write_released(rec, stopped)
        await self._emit("instance.fenced", rec.name, why)

    async def _reconcile(self, rec: InstanceRecord, converge: bool = False) -> None:
        """Carry out a new desired generation (``converge``: the desired state whatever the
        generation, as a new owner does)."""
        desired = rec.desired
        if (
            not converge
            and desired.generation <= rec.status.observed_generation
            and desired.power is not DesiredPower.DELETED
        ):
            return
        error: VirtfleetError | None = None
        try:
            if await self._apply(rec):
                return  # the start wrote the generation with the running status
            await self._apply_live(rec.name, rec.spec.kind)
        except VirtfleetError as err:
            error = err
            log.warning("%s: %s failed: %s", rec.name, desired.power.value, err.message)
        if desired.power is DesiredPower.DELETED and error is None:
            return
        status = (await self.repo.get(rec.name)).status
        await self._write_status(
            rec.name,
            status.model_copy(
                update={
                    "observed_generation": desired.generation,
                    "error_code": error.code if error else None,
                    "error_message": error.message if error else None,
                }
            ),
        )

    async def _apply(self, rec: InstanceRecord) -> bool:
        """Carry out ``rec.desired``; True if that also recorded the generation as observed
        (a start with nothing after it: nothing is left to apply or write)."""
        desired, power = rec.desired, rec.status.power
        if desired.power is DesiredPower.DELETED:
            await self._delete(rec)
        elif desired.restart == desired.generation:
            await self._restart(rec)
        elif desired.power is DesiredPower.STOPPED:
            if power not in (PowerState.STOPPED, PowerState.CRASHED):
                await self._stop_unless_called_off(rec)
        elif desired.power is DesiredPower.RUNNING:
            if power is PowerState.PAUSED:
                await self.driver.resume(rec.name)
                await self._set_power(rec.name, PowerState.RUNNING, "resumed")
            elif power in (PowerState.STOPPED, PowerState.CRASHED):
                # Nothing follows the start but the record of this generation: write it
                # with the running status (one write; the operation ends on it).
                last = not self._live_resources(rec.spec.kind)
                await self._start(rec, observed=desired.generation if last else None)
                return last
        elif desired.power is DesiredPower.PAUSED:
            if power is not PowerState.RUNNING and power is not PowerState.PAUSED:
                raise InvalidStateError(power.value, "running")
            if power is PowerState.RUNNING:
                await self.driver.pause(rec.name)
                await self._set_power(rec.name, PowerState.PAUSED, "paused")
        return False

    # -- carrying out requests -----------------------------------------------------------

    def _accel(self, spec: InstanceSpec) -> tuple[Accel, str]:
        kvm = self.facts.kvm
        if spec.accel is Accel.TCG:
            return Accel.TCG, "TCG requested"
        if kvm.usable:
            return Accel.KVM, f"KVM probe ran a vCPU ({kvm.reason})"
        if spec.accel is Accel.KVM:
            raise HostError(f"KVM was requested but is not usable here: {kvm.reason}")
        return Accel.TCG, f"KVM unusable ({kvm.reason}); using TCG binary translation"

    async def _start(self, rec: InstanceRecord, observed: int | None = None) -> None:
        """Start the instance; ``observed``: also record that desired generation as done."""
        spec = rec.spec.normalized()
        self.driver.validate(spec)
        accel, reason = self._accel(spec)
        launched = asyncio.Event()
        marking = asyncio.create_task(self._mark_starting(rec, launched))
        try:
            found, cgroup = await self._launch(spec, accel, reason)
        except BaseException:
            launched.set()
            starting = await marking
            await self._set_power(rec.name, PowerState.STOPPED, "start failed", starting)
            raise
        launched.set()
        starting = await marking  # every later status write comes after the mark
        if cgroup is not None:
            self._cgroups[rec.name] = cgroup
        mode = "container" if spec.kind == "container" else accel.value
        started = await self.events.entry(_event("instance.started", rec.name, f"started ({mode})"))
        # No read back: the agent alone writes the status, and holds the instance's lock.
        # The event goes in the same commit.
        status = _started(starting or rec.status, found, spec, observed)
        await self._write_status(rec.name, status, also=(started,))
        try:
            await self._apply_live(rec.name, spec.kind)  # balloon target, disk throttling
        except VirtfleetError as err:
            await self._emit("instance.resize_failed", rec.name, err.message)

    async def _mark_starting(
        self, rec: InstanceRecord, launched: asyncio.Event
    ) -> InstanceStatus | None:
        """Record STARTING if the launch is still going after ``STARTING_AFTER_S``; the
        status written, or None (launched sooner: nothing written)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTING_AFTER_S):
                await launched.wait()
                return None
        return await self._set_power(rec.name, PowerState.STARTING, "starting", rec.status)

    async def _launch(
        self, spec: InstanceSpec, accel: Accel, reason: str
    ) -> tuple[InstanceStatus, InstanceCgroup | None]:
        """Disks, cgroup, NICs, then the driver's start; all of it undone if one fails."""
        async with contextlib.AsyncExitStack() as undo:
            paths, created = await self.disks.ensure(spec)
            undo.callback(self.disks.discard, created)
            uefi, made = await self.disks.uefi_vars(spec)
            undo.callback(self.disks.discard, made)
            await self.disks.grow(spec, paths)
            limits = cgroup_limits(spec)
            cgroup = self.cgroups.create(spec.name, **limits) if self._vm_cgroups(spec) else None
            if cgroup is not None:
                undo.callback(cgroup.remove)
            procs = tuple(cgroup.procs_files) if cgroup is not None else ()
            taps = await self.nics.plug(spec)
            undo.push_async_callback(self.nics.unplug, spec.name)
            seed = await self.disks.seed(spec)
            join = await self.nics.joiner(spec)  # containers: veths once the init exists
            with self.disks.driver_iso(spec) as iso:  # closed once QEMU holds its copy
                ctx = LaunchContext(
                    accel,
                    reason,
                    paths,
                    procs,
                    hostname=spec.name,
                    taps=taps,
                    cidata=seed,
                    join_netns=join,
                    uefi=uefi,
                    tpm_state=self.disks.tpm_state(spec),
                    driver_iso_fd=iso,
                )
                found = await self.driver.start(spec, ctx)
            undo.pop_all()
        return found, cgroup

    def _live_resources(self, kind: str) -> bool:
        """Whether ``_apply_live`` has work for instances of ``kind``: VMs, if the driver can.
        Containers change their limits through ContainerService (runtime update)."""
        return kind == "vm" and isinstance(self.driver, SupportsLiveResources)

    async def _apply_live(self, name: str, kind: str) -> None:
        """Bring a running VM's live resources to its spec; record what is live now."""
        if not self._live_resources(kind) or not isinstance(self.driver, SupportsLiveResources):
            return
        rec = await self.repo.find(name)
        live = (PowerState.RUNNING, PowerState.PAUSED)
        if rec is None or rec.status.applied is None or rec.status.power not in live:
            return
        was = rec.status.applied
        applier = LiveApplier(self.driver, self.disks)
        applied, error = await applier.apply(
            name, was, rec.spec.normalized(), self._cgroups.get(name)
        )
        if applied != was:
            status = (await self.repo.get(name)).status
            await self._write_status(name, status.model_copy(update={"applied": applied}))
            await self._emit("instance.resized", name, "resources changed live")
        if error is not None:
            raise error

    def _vm_cgroups(self, spec: InstanceSpec) -> bool:
        """The agent makes cgroups for VMs; a container's runtime makes its own (cgroupsPath)."""
        return bool(self.cgroups) and spec.kind == "vm"

    async def _stop_unless_called_off(self, rec: InstanceRecord) -> None:
        """The desired stop; a newer desired state asking for the instance to stay up (a
        cancelled stop operation writes one) ends it while it waits for the guest."""
        task = asyncio.current_task()
        assert task is not None
        self._stopping[rec.name] = task
        try:
            await self._stop(rec, rec.desired.force, rec.desired.timeout_s)
        finally:
            self._stopping.pop(rec.name, None)

    def _call_off_stop(self, name: str, desired: bytes | None) -> None:
        task = self._stopping.get(name)
        if task is None or desired is None:
            return
        wanted = DesiredState.model_validate_json(desired).power
        if wanted in (DesiredPower.RUNNING, DesiredPower.PAUSED):
            task.cancel()  # _stop records what the driver then sees

    async def _stop(self, rec: InstanceRecord, force: bool, timeout_s: float) -> None:
        await self._set_power(rec.name, PowerState.STOPPING, "stopping")
        try:
            await self.driver.stop(rec.name, force=force, timeout_s=timeout_s)
        except BaseException:
            # A cancelled or failed stop: record what the driver sees, never "stopping".
            try:
                await asyncio.shield(self._stop_abandoned(rec.name))
            except Exception:
                log.exception("%s: recording the called-off stop failed", rec.name)
            raise
        await self._stopped(rec.name, "forced off" if force else "stopped")

    async def _stopped(self, name: str, reason: str) -> None:
        await self._release_cgroup(name)
        await self.nics.unplug(name)
        await self._set_power(name, PowerState.STOPPED, reason)

    async def _stop_abandoned(self, name: str) -> None:
        power = (await self.driver.status(name)).power
        if power in (PowerState.STOPPED, PowerState.CRASHED):
            await self._stopped(name, "stopped")  # it ended as the stop was called off
        else:
            await self._set_power(name, power, "stop cancelled")
            await self._emit("instance.stop_cancelled", name, f"stop called off; {power.value}")

    async def _restart(self, rec: InstanceRecord) -> None:
        if rec.status.power not in (PowerState.RUNNING, PowerState.PAUSED):
            raise InvalidStateError(rec.status.power.value, ["running", "paused"])
        if rec.desired.force and rec.spec.kind == "vm":
            await self.driver.reset(rec.name)
            await self._emit("instance.reset", rec.name, "hard reset")
            return
        # A container's hard reset is a kill and a start: its veths need the new netns.
        await self._stop(rec, rec.desired.force, rec.desired.timeout_s)
        await self._start(await self.repo.get(rec.name))

    async def _delete(self, rec: InstanceRecord) -> None:
        await self.driver.delete(rec.name)
        await self._release_cgroup(rec.name)
        await self.nics.unplug(rec.name)
        if rec.desired.delete_disks:
            self.disks.remove(rec.name)
        if not await self.repo.remove_owned(rec.name, rec.owner_revision):
            raise FencedOut(rec.name)
        await self._emit("instance.deleted", rec.name, "deleted")

    async def _release_cgroup(self, name: str) -> None:
        cgroup = self._cgroups.pop(name, None)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)  # waits briefly for tasks to drain

    # -- following the driver ------------------------------------------------------------

    async def _follow_driver(self) -> None:
        async for event in self.driver.events():
            try:
                await self._on_driver_event(event)
            except FencedOut:
                self._schedule(event.name)
            except Exception:
                log.exception("handling %s of %s failed", event.kind, event.name)

    async def _on_driver_event(self, event: DriverEvent) -> None:
        rec = await self.repo.find(event.name)
        if rec is None or not self.fences.owns(rec) or not self.fences.held(rec.name):
            return  # not ours (any more, or not yet): the fencing or take-over records it
        if event.kind in ("paused", "running"):
            power = PowerState.PAUSED if event.kind == "paused" else PowerState.RUNNING
            await self._set_power(rec.name, power, event.reason)
        elif event.kind in ("stopped", "crashed"):
            if event.requested:  # our own stop or delete: _stop/_delete record the power
                self._note_exit_code(rec.name, event.exit_code)
                return
            await self._release_cgroup(rec.name)
            await self.nics.unplug(rec.name)
            crashed = event.kind == "crashed"
            power = PowerState.CRASHED if crashed else PowerState.STOPPED
            await self._set_power(rec.name, power, event.reason, exit_code=event.exit_code)
            await self._emit(f"instance.{event.kind}", rec.name, event.reason)
            self._after_exit(rec, crashed)
        else:
            await self._emit(f"instance.{event.kind}", rec.name, event.reason)

    def _note_exit_code(self, name: str, code: int | None) -> None:
        """Record the exit code of a stop we asked for, once that stop is written (under
        the instance's lock, in a task: the event loop of every instance must not wait)."""
        if code is None:
            return
        task = asyncio.create_task(self._write_exit_code(name, code))
        self._pending[f"{name}#exit-{id(task)}"] = task
        task.add_done_callback(lambda t: self._pending.pop(f"{name}#exit-{id(t)}", None))

    async def _write_exit_code(self, name: str, code: int) -> None:
        async with self.lock(name):
            rec = await self.repo.find(name)
            if rec is None or rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
                return  # started again meanwhile: that run's code is not this one
            await self._write_status(name, rec.status.model_copy(update={"exit_code": code}))

    def _after_exit(self, rec: InstanceRecord, crashed: bool) -> None:
        """Apply the restart policy to an exit nobody asked for."""
        policy = rec.spec.restart_policy
        if policy is RestartPolicy.NO or (policy is RestartPolicy.ON_FAILURE and not crashed):
            return
        if rec.desired.power is DesiredPower.STOPPED:
            return
        delay = BACKOFF_S[min(rec.status.restarts, len(BACKOFF_S) - 1)]
        task = asyncio.create_task(self._policy_restart(rec.name, delay))
        self._pending[f"{rec.name}#restart"] = task

    async def _policy_restart(self, name: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        with contextlib.suppress(FencedOut):  # moved away meanwhile: not ours to restart
            await self._restart_by_policy(name)

    async def _restart_by_policy(self, name: str) -> None:
        async with self.lock(name):
            rec = await self.repo.find(name)
            if rec is None or rec.status.power not in (PowerState.CRASHED, PowerState.STOPPED):
                return
            if not self.fences.owns(rec) or rec.desired.power is not DesiredPower.RUNNING:
                return  # not ours, or asked to stay down (a stop) while the restart waited
            status = rec.status.model_copy(update={"restarts": rec.status.restarts + 1})
            await self._write_status(name, status)
            try:
                await self._start(await self.repo.get(name))
                await self._emit("instance.restarted", name, "restarted by its restart policy")
            except VirtfleetError as err:
                await self._emit("instance.restart_failed", name, err.message)

    # -- store writes --------------------------------------------------------------------

    async def _set_power(
        self,
        name: str,
        power: PowerState,
        reason: str,
        current: InstanceStatus | None = None,
        exit_code: int | None = None,
    ) -> InstanceStatus | None:
        """Record ``power`` (and an exit's ``exit_code``) and return the status written
        (None: no such instance); ``current``: the status as read with no await since (the
        agent alone writes it), saving a read of the whole record."""
        if current is None:
            rec = await self.repo.find(name)
            if rec is None:
                return None
            current = rec.status
        update: dict[str, Any] = {"power": power, "reason": reason}
        if exit_code is not None:
            update["exit_code"] = exit_code
        if power in (PowerState.STOPPED, PowerState.CRASHED):
            update["pid"] = None
            update["applied"] = None
        return await self._write_status(name, current.model_copy(update=update))

    async def _write_status(
        self, name: str, status: InstanceStatus, also: Sequence[Put] = ()
    ) -> InstanceStatus:
        status = status.model_copy(update={"updated_at": datetime.now(UTC)})
        return await self.fences.write_status(name, status, also)

    async def _emit(self, kind: str, target: str, message: str) -> None:
        await self.events.append(_event(kind, target, message))

    # -- the host-operations door (virtfleet.hostops; host.ops.LocalHostOps uses these) ---

    def lock(self, name: str) -> asyncio.Lock:
        """Instance ``name``'s exclusive lock: its reconciles, restart-policy starts and
        every host action on it (snapshots, restores, direct power calls) run under it."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def start_instance(self, name: str) -> None:
        async with self.lock(name):
            await self.start_held(name)

    async def stop_instance(self, name: str, force: bool = False, timeout_s: float = 60.0) -> None:
        async with self.lock(name):
            await self.stop_held(name, force, timeout_s)

    async def start_held(self, name: str) -> None:
        """Start stopped or crashed ``name``; the caller holds ``lock(name)``."""
        rec = await self.repo.get(name)
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, ["stopped", "crashed"])
        await self._start(rec)

    async def stop_held(self, name: str, force: bool, timeout_s: float) -> None:
        """Stop ``name`` (idempotent); the caller holds ``lock(name)``."""
        rec = await self.repo.get(name)
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            await self._stop(rec, force, timeout_s)

    async def restart_instance(
        self, name: str, force: bool = False, timeout_s: float = 60.0
    ) -> None:
        """A running or paused instance restarted (``force``: a VM's hard reset)."""
        async with self.lock(name):
            rec = await self.repo.get(name)
            if rec.status.power not in (PowerState.RUNNING, PowerState.PAUSED):
                raise InvalidStateError(rec.status.power.value, ["running", "paused"])
            if force and rec.spec.kind == "vm":
                await self.driver.reset(name)
                await self._emit("instance.reset", name, "hard reset")
                return
            await self._stop(rec, force, timeout_s)
            await self._start(await self.repo.get(name))

    async def pause_instance(self, name: str) -> None:
        """Idempotent on a paused instance; ``InvalidStateError`` unless running."""
        async with self.lock(name):
            power = (await self.repo.get(name)).status.power
            if power is PowerState.PAUSED:
                return
            if power is not PowerState.RUNNING:
                raise InvalidStateError(power.value, "running")
            await self.driver.pause(name)
            await self._set_power(name, PowerState.PAUSED, "paused")

    async def resume_instance(self, name: str) -> None:
        """Idempotent on a running instance; ``InvalidStateError`` unless paused."""
        async with self.lock(name):
            power = (await self.repo.get(name)).status.power
            if power is PowerState.RUNNING:
                return
            if power is not PowerState.PAUSED:
                raise InvalidStateError(power.value, "paused")
            await self.driver.resume(name)
            await self._set_power(name, PowerState.RUNNING, "resumed")

    # -- consoles and live figures ------------------------------------------------------

    def socket_path(self, name: str) -> Path | None:
        return self.driver.console_socket(name)

    def log_path(self, name: str) -> Path | None:
        return self.driver.console_log(name)

    def vnc_socket(self, name: str) -> Path | None:
        graphics = self.driver if isinstance(self.driver, SupportsGraphics) else None
        return graphics.vnc_socket(name) if graphics else None

    async def live_stats(self, name: str) -> dict[str, Any]:
        """What the driver sees of a running VM's resources now (empty if it cannot say)."""
        if not isinstance(self.driver, SupportsLiveResources):
            return {}
        try:
            return await self.driver.live_stats(name)
        except InvalidStateError:
            return {}

    async def screenshot(self, name: str) -> bytes:
        if not isinstance(self.driver, SupportsGraphics):
            raise ConflictError(f"the {self.driver.name} driver gives instances no screen")
        return await self.driver.screenshot(name)


def _started(
    status: InstanceStatus, found: InstanceStatus, spec: InstanceSpec, observed: int | None
) -> InstanceStatus:
    """``status`` after a start the driver reported as ``found``; with ``observed`` it also
    records that desired generation as carried out (and clears any earlier error)."""
    update: dict[str, Any] = {
        "power": found.power,
        "pid": found.pid,
        "accel": found.accel,
        "accel_reason": found.accel_reason,
        "qemu_version": found.qemu_version,
        "started_at": found.started_at,
        "reason": "started",
        "exit_code": None,  # running: the last run's code no longer describes it
        "applied": launched(spec),
    }
    if observed is not None:
        update.update(observed_generation=observed, error_code=None, error_message=None)
    return status.model_copy(update=update)


def _event(kind: str, name: str, message: str) -> Event:
    return Event(kind=kind, target=f"instance/{name}", message=message)
