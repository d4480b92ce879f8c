"""``OciDriver``: OS-level system containers on this host through an OCI runtime.

Owns each container's run directory ``run_root/<name>/`` (bundle, console sockets
and log, runtime record), its overlay mount point ``mount_root/<name>`` (outside
the data directory, which stays 0700), its overlay layer
``layer_root/<name>/`` and the runtime's state under ``state_root``. Watches each
container's init through a pidfd and turns its exit into ``stopped`` (asked
for) or ``crashed`` events. Never reads or writes the store and never decides
policy (restarts): that is the agent's job. Everything a failed start created
(mount, runtime state, cgroups, the kept console) is undone before it raises. A
container stopped on request keeps its rootfs overlay mounted, as a directory
rootfs would simply stay (its next start skips a ~1 ms mount); a crash, a failed
start, a restore and delete unmount it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from virtfleet.drivers.base import DriverEvent, DriverInfo, EventKind, LaunchContext
from virtfleet.drivers.oci import access, appimage, console, layers
from virtfleet.drivers.oci.bundle import IdMap, resources
from virtfleet.drivers.oci.bundlefile import BundleWriter, ImageRef, stamp
from virtfleet.drivers.oci.handover import ConsoleSocket, Master
from virtfleet.drivers.oci.idranges import IdRanges
from virtfleet.drivers.oci.record import ContainerRecord, load, save
from virtfleet.drivers.oci.runtime import ExecResult, Runtime, RuntimeChoice
from virtfleet.errors import (
    ImageError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ProcessError,
    VirtfleetError,
)
from virtfleet.model.instance import Accel, InstanceSpec, InstanceStatus, PowerState
from virtfleet.util.cgroups import parse_mountinfo

log = logging.getLogger(__name__)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin
KEEPER_SOCKET = ".console-keeper.sock"  # a dot: never a container's name
CONSOLE_SOCKET = ".console.sock"  # the runtimes' --console-socket
ID_RANGE_FILE = "id-range"  # beside the container's layer: the user-namespace range it owns
EXEC_TIMEOUT_S = 60.0
RUNTIME_ERROR_WAIT_S = 5.0  # a runtime that dropped the console socket exits at once
_NOT_FOUND = ("executable file not found", "no such file or directory", "not found in $path")


@dataclass(frozen=True)
class OciPaths:
    root: Path
    rootfs: Path  # the overlay's mount point: the container's mapped root must reach it

    @property
    def bundle(self) -> Path:
        return self.root

    @property
    def legacy_rootfs(self) -> Path:
        """Where older versions mounted it (inside the data directory)."""
        return self.root / "rootfs"

    @property
    def record(self) -> Path:
        return self.root / "record.json"

    @property
    def console(self) -> Path:
        return self.root / "console.sock"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"


@dataclass
class _Container:
    record: ContainerRecord
    pid: int  # the init's, on the host
    pidfd: int
    relay: console.ConsoleRelay | None
    app: bool = False  # an application container: its init records the command's exit code
    power: PowerState = PowerState.RUNNING
    stopping: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    finisher: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class OciConfig:
    run_root: Path  # per-container run directories
    layer_root: Path  # per-container overlay upper/work (the container's "disk")
    lower_root: Path  # extracted images, shared read-only by all containers
    state_root: Path  # the runtime's --root
    rootfs_for: Callable[[str], Path]  # image name -> rootfs tarball
    cgroup_parent: str  # e.g. "virtfleet-1a2b3c4d": cgroups go to /<parent>/<name>
    mount_root: Path  # per-container rootfs mount points, traversable by mapped roots
    userns: IdRanges | None = None  # each container its own range; None: no user namespace
    oci_for: Callable[[str], Path] | None = None  # imported image name -> its description


class OciDriver:
    name = "oci"

    def __init__(self, config: OciConfig, choice: RuntimeChoice) -> None:
        self.cfg = config
        self.choice = choice
        self.runtime = Runtime(choice.binary or "runc", config.state_root)
        self._live: dict[str, _Container] = {}
        self._events: asyncio.Queue[DriverEvent] = asyncio.Queue()
        self.bundles = BundleWriter(config.cgroup_parent)
        self._images: dict[Path, ImageRef] = {}  # imported images' descriptions, as loaded
        # rootfs overlays this driver mounted: their lower (tarball) or description and stamp
        self._mounted: dict[str, tuple[Path, str]] = {}
        self.keeper = console.ConsoleKeeper(config.run_root / KEEPER_SOCKET, self._masters)
        self.consoles = ConsoleSocket(config.run_root / CONSOLE_SOCKET)

    def info(self) -> DriverInfo:
        details = {"runtime": self.runtime.name if self.choice.binary else None}
        details.update({f"runtime_{k}": v for k, v in self.choice.reasons.items()})
        details["user_namespaces"] = "on" if self.cfg.userns else "off"
        if self.cfg.userns is not None:
            uid = self.cfg.userns.first  # every container's mapped root is an "other" user here
            blocked = access.blocking_dir(self.cfg.mount_root, uid, uid)
            details["unreachable_dir"] = str(blocked) if blocked is not None else None
        if not self.choice.binary:
            reasons = "; ".join(f"{k}: {v}" for k, v in self.choice.reasons.items())
            return DriverInfo(self.name, False, f"no usable OCI runtime ({reasons})", details)
        return DriverInfo(self.name, True, "", details)

    def paths(self, name: str) -> OciPaths:
        return OciPaths(self.cfg.run_root / name, self.cfg.mount_root / name)

    def layer_dir(self, name: str) -> Path:
        return self.cfg.layer_root / name / "rootfs-layer"

    def owns(self, name: str) -> bool:
        return name in self._live or self.paths(name).record.exists()

    def validate(self, spec: InstanceSpec) -> None:
        if spec.kind != "container":
            raise InvalidInputError(f"{spec.name!r} is a {spec.kind}, not a container")
        if not self.choice.binary:
            raise InvalidStateError("no OCI runtime", self.info().reason)
        if len(str(self.paths(spec.name).console)) > MAX_SOCKET_PATH:
            raise InvalidInputError(f"run directory path too long for unix sockets: {spec.name}")
        if not spec.image:
            raise InvalidInputError(f"container {spec.name!r} needs an image (its rootfs)")
        if self._oci_meta(spec.image) is not None:
            return
        tar = self.cfg.rootfs_for(spec.image)
        if not tar.is_file():
            raise ImageError(f"image {spec.image!r} has no container rootfs (looked for {tar})")
        if spec.container_mode == "app":
            raise InvalidInputError(f"image {spec.image!r} is no OCI image: it runs as a system")

    def _oci_meta(self, image: str) -> Path | None:
        """The description of imported OCI image ``image``, None if it is none."""
        meta = self.cfg.oci_for(image) if self.cfg.oci_for else None
        return meta if meta is not None and meta.is_file() else None

    def app_dir(self, name: str) -> Path:
        return self.paths(name).root / "app"

    # -- start -----------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        """Create and start the container; on any failure nothing is left behind."""
        if c := self._live.get(spec.name):
            raise InvalidStateError(c.power.value, "stopped")
        self.validate(spec)
        paths, userns = self.paths(spec.name), self.id_range(spec.name)
        shift = userns.host_id if userns else 0
        async with contextlib.AsyncExitStack() as undo:
            paths.root.mkdir(parents=True, exist_ok=True, mode=0o711)
            paths.root.chmod(0o711)  # the daemon's umask is 077: the mapped root traverses
            undo.push_async_callback(self._cleanup, spec.name)
            image = await self._prepare_rootfs(spec, paths, userns)
            self.bundles.write(spec, paths.bundle, paths.rootfs, userns, image)
            # Nothing to do between create and start (no veths to move in): one runtime
            # process, ``run --detach``, instead of two (about 6 ms less with runc).
            join = ctx.join_netns
            record = ContainerRecord(
                name=spec.name,
                runtime=self.runtime.binary,
                userns_host_id=shift if userns else None,
                spec=spec,
            )
            relay, pid = await self._create(record, paths, undo, run=join is None)
            if join is not None:
                await join(pid)  # eth0... exist before the init runs
                await self.runtime.start(spec.name)
            c = await self._attach(record, relay, pid)
            undo.pop_all()
        return self._status(c)

    def id_range(self, name: str) -> IdMap | None:
        """The container's own id range (kept with its layer: the layer's files are owned by
        it), None without user namespaces."""
        if self.cfg.userns is None:
            return None
        owner = self.cfg.layer_root / name / ID_RANGE_FILE
        return self.cfg.userns.acquire(owner, self.layer_dir(name))

    async def _prepare_rootfs(
        self, spec: InstanceSpec, paths: OciPaths, userns: IdMap | None
    ) -> ImageRef | None:
        """Mount the overlay (an imported OCI image's: returned). A tarball image's first
        use extracts it, in a thread; after that it is a few mkdir/chown and one mount(2),
        done here (a thread hop costs more)."""
        assert spec.image is not None
        meta = self._oci_meta(spec.image)
        if meta is not None:
            return await self._mount_oci(spec.name, meta, paths, userns)
        shift = userns.host_id if userns else 0
        tar, root = self.cfg.rootfs_for(spec.image), self.cfg.lower_root
        lower = layers.extracted(tar, root, shift)
        if lower is None:
            lower = await asyncio.to_thread(layers.ensure_lower, tar, root, shift)
        if self._mounted.get(spec.name) == (lower, "") and layers.is_mounted(paths.rootfs):
            return None  # kept since a requested stop: same image, nothing wrote the layer
        layers.unmount(paths.rootfs)  # not one this driver made (e.g. before a restart)
        layers.unmount(paths.legacy_rootfs)  # kept by an older version, in the data dir
        upper, work = layers.prepare_layer(self.layer_dir(spec.name), shift)
        layers.mount_overlay(lower, upper, work, paths.rootfs)
        self._mounted[spec.name] = (lower, "")
        return None

    async def _mount_oci(
        self, name: str, meta: Path, paths: OciPaths, userns: IdMap | None
    ) -> ImageRef:
        """The imported image's layers, shared with every container of it, mounted (kept
        mounted since a requested stop: unless the image's description changed, no file
        work and no thread)."""
        image = await self._image(meta)
        if self._mounted.get(name) == (meta, image.stamp) and layers.is_mounted(paths.rootfs):
            return image
        self._mounted.pop(name, None)
        await asyncio.to_thread(self._remount_oci, image, paths, self.layer_dir(name), userns)
        self._mounted[name] = (meta, image.stamp)
        return image

    @staticmethod
    def _remount_oci(image: ImageRef, paths: OciPaths, layer: Path, userns: IdMap | None) -> None:
        layers.unmount(paths.rootfs)
        appimage.mount_rootfs(image.image, layer, paths.rootfs, userns)

    async def _image(self, meta: Path) -> ImageRef:
        """The image described at ``meta``, read again (in a thread) only if the file
        changed since it was last read."""
        now = stamp(meta)
        known = self._images.get(meta)
        if known is not None and known.stamp == now:
            return known
        image = ImageRef(await asyncio.to_thread(appimage.load, meta), now)
        self._images[meta] = image
        return image

    async def _create(
        self,
        record: ContainerRecord,
        paths: OciPaths,
        undo: contextlib.AsyncExitStack,
        run: bool,
    ) -> tuple[console.ConsoleRelay, int]:
        """``runtime create`` (``run``: ``run --detach``, the init running): (console relay,
        init pid). The console is set up, and the record saved, the moment the runtime
        hands the pty master over, while it still works (off the start's critical path).
        ``undo`` gets the console's teardown (``start``'s cleanup removes the record)."""
        name = record.name
        # Spawned here, not when a task gets to it: what the loop has queued (the
        # agent's STARTING write and its waiters) runs while the runtime works.
        command = self.runtime.create(name, paths.bundle, self.consoles.listening(), run=run)
        creating = asyncio.create_task(command.output())
        receiving = asyncio.create_task(self.consoles.receive(command.proc.pid))
        master: Master | None = None
        try:
            await asyncio.wait({receiving, creating}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                creating.result()  # ended before handing the console over: raises its error
            elif receiving.exception() is not None:
                await _runtime_error(creating)  # its own words, not "no console fd"
            master = await receiving
            relay = _relay(master.fd, paths)
            undo.push_async_callback(relay.close)  # closes the master too
            self.keeper.keep(name, relay.master)
            undo.callback(self.keeper.drop, name)
            await relay.start()
            save(record, paths.record)
            await creating
            return relay, await self.runtime.init_pid(name, command, master.sender)
        except BaseException:
            await _abandon(receiving, creating, taken=master is not None)
            command.abandon()  # killed and reaped even if its task never ran
            raise

    def _masters(self) -> list[tuple[str, int]]:
        """Each live container's console master (for a new console keeper)."""
        return [(name, c.relay.master) for name, c in self._live.items() if c.relay]

    async def _attach(
        self, record: ContainerRecord, relay: console.ConsoleRelay | None, pid: int
    ) -> _Container:
        """Watch the init ``pid`` through a pidfd (``relay``: its console, started); adds
        to the live set."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as err:
            raise ProcessError(f"container init {pid} is gone") from err
        c = _Container(record, pid, pidfd, relay, app=self._is_app(record.spec))
        self._live[record.name] = c
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit, c)
        return c

    def _is_app(self, spec: InstanceSpec) -> bool:
        is_oci = spec.image is not None and self._oci_meta(spec.image) is not None
        return appimage.mode(spec, is_oci) == "app"

    # -- exits and teardown ------------------------------------------------------------

    def _on_exit(self, c: _Container) -> None:
        asyncio.get_running_loop().remove_reader(c.pidfd)
        c.finisher = asyncio.create_task(self._finish(c), name=f"oci-exit-{c.record.name}")

    async def _finish(self, c: _Container) -> None:
        name = c.record.name
        if self._live.get(name) is c:
            del self._live[name]
        _close(c.pidfd)
        if c.relay is not None:
            await c.relay.close()
        try:
            await self._cleanup(name, keep_rootfs=c.stopping)
        except VirtfleetError as err:
            log.warning("cleaning up container %s failed: %s", name, err.message)
        c.gone.set()
        code = appimage.exit_code(self.app_dir(name)) if c.app else None
        if c.stopping:
            self._emit(name, "stopped", "stopped by request", True, code)
        elif code == 0:
            self._emit(name, "stopped", "application exited with code 0", code=0)
        elif code is not None:
            self._emit(name, "crashed", f"application exited with code {code}", code=code)
        else:
            self._emit(name, "crashed", f"container init (pid {c.pid}) exited")

    async def _cleanup(self, name: str, keep_rootfs: bool = False) -> None:
        """Remove what a (failed or ended) container leaves: runtime state, cgroups, mount
        (``keep_rootfs``: not the mount, for a container stopped on request)."""
        paths = self.paths(name)
        record = load(paths.record)
        self.keeper.drop(name)
        runtime = Runtime(record.runtime, self.cfg.state_root) if record else self.runtime
        try:
            await runtime.delete(name, force=True)
        finally:
            await asyncio.to_thread(self._remove_cgroups, name)
            if not keep_rootfs:
                await self._unmount(name)
            paths.record.unlink(missing_ok=True)

    async def _unmount(self, name: str) -> None:
        """Unmount the rootfs (and one an older version mounted in the data directory)."""
        self._mounted.pop(name, None)
        paths = self.paths(name)
        await asyncio.to_thread(layers.unmount, paths.rootfs)
        await asyncio.to_thread(layers.unmount, paths.legacy_rootfs)

    def _remove_cgroups(self, name: str) -> None:
        """rmdir ``<hierarchy>/<parent>/<name>`` wherever the runtime left one."""
        for mount in cgroup_mounts():
            with contextlib.suppress(FileNotFoundError, OSError):
                (mount / self.cfg.cgroup_parent / name).rmdir()

    def remove_cgroup_parent(self) -> None:
        """rmdir the parent cgroups that are empty (on close: runc leaves them)."""
        for mount in cgroup_mounts():
            with contextlib.suppress(OSError):
                (mount / self.cfg.cgroup_parent).rmdir()

    def _emit(
        self,
        name: str,
        kind: EventKind,
        reason: str,
        requested: bool = False,
        code: int | None = None,
    ) -> None:
        self._events.put_nowait(DriverEvent(name, kind, reason, requested, code))

    # -- power -----------------------------------------------------------------------

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        """SIGTERM to init, SIGKILL after ``timeout_s`` (at once with ``force``); idempotent."""
        c = self._live.get(name)
        if c is None:
            if self.paths(name).record.exists():
                await self._cleanup(name)  # a record without a live init: leftovers
            return
        c.stopping = True
        if c.power is PowerState.PAUSED:
            await self.runtime.resume(name)  # frozen tasks do not act on signals
            c.power = PowerState.RUNNING
        if not force:
            try:
                with contextlib.suppress(ProcessError):
                    await self.runtime.kill(name, "TERM")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(c.gone.wait(), timeout_s)
                    return
            except asyncio.CancelledError:
                c.stopping = c.gone.is_set()  # called off: a later exit is the app's own
                raise
        with contextlib.suppress(ProcessError):
            await self.runtime.kill(name, "KILL")
        await c.gone.wait()

    async def pause(self, name: str) -> None:
        c = self._require(name, PowerState.RUNNING)
        await self.runtime.pause(name)
        c.power = PowerState.PAUSED

    async def resume(self, name: str) -> None:
        c = self._require(name, PowerState.PAUSED)
        await self.runtime.resume(name)
        c.power = PowerState.RUNNING

    async def reset(self, name: str) -> None:
        """Kill the container and start it again from the same spec (a hard reset)."""
        c = self._live.get(name)
        if c is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        spec = c.record.spec
        await self.stop(name, force=True)
        await self.start(spec, _reset_context(spec))

    def _require(self, name: str, state: PowerState) -> _Container:
        c = self._live.get(name)
        current = c.power if c else PowerState.STOPPED
        if c is None or current is not state:
            raise InvalidStateError(current.value, state.value)
        return c

    async def delete(self, name: str) -> None:
        await self.stop(name, force=True)
        await self._unmount(name)  # before the rmtree: never delete through the overlay
        self.bundles.forget(name)
        paths = self.paths(name)
        shutil.rmtree(paths.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            paths.rootfs.rmdir()  # the empty mount point

    async def status(self, name: str) -> InstanceStatus:
        c = self._live.get(name)
        return self._status(c) if c else InstanceStatus(power=PowerState.STOPPED)

    def _status(self, c: _Container) -> InstanceStatus:
        return InstanceStatus(
            power=c.power,
            pid=c.pid,
            accel_reason=f"OS-level container ({Path(c.record.runtime).name})",
            started_at=c.record.started_at,
        )

    async def adopt(self, name: str) -> InstanceStatus:
        """Re-attach to a container that outlived the agent; never starts anything."""
        if c := self._live.get(name):
            return self._status(c)
        record = load(self.paths(name).record)
        if record is None:
            return InstanceStatus(power=PowerState.STOPPED)
        runtime = Runtime(record.runtime, self.cfg.state_root)
        state = await runtime.state(name)
        if state is None or state.get("status") not in ("running", "paused"):
            await self._cleanup(name)
            code = appimage.exit_code(self.app_dir(name)) if self._is_app(record.spec) else None
            if code is None:
                reason = "container init exited while the agent was down"
                return InstanceStatus(power=PowerState.CRASHED, reason=reason)
            power = PowerState.STOPPED if code == 0 else PowerState.CRASHED
            reason = f"application exited with code {code} while the agent was down"
            return InstanceStatus(power=power, reason=reason, exit_code=code)
        master = None
        try:
            master = self.keeper.take(name)
        except ProcessError as err:
            log.warning("container %s: console not recovered: %s", name, err.message)
        if master is None:
            log.warning("container %s: its console was not kept; none after re-adoption", name)
        relay = None
        if master is not None:
            paths = self.paths(name)
            relay = console.ConsoleRelay(master, paths.console_log, paths.console)
            await relay.start()
        c = await self._attach(record, relay, int(state["pid"]))
        c.power = PowerState.PAUSED if state["status"] == "paused" else PowerState.RUNNING
        return self._status(c)

    async def list(self) -> list[str]:
        if not self.cfg.run_root.exists():
            return []
        return sorted(p.parent.name for p in self.cfg.run_root.glob("*/record.json"))

    async def events(self) -> AsyncIterator[DriverEvent]:
        while True:
            yield await self._events.get()

    def console_socket(self, name: str) -> Path | None:
        c = self._live.get(name)
        return c.relay.sock_path if c and c.relay else None

    def console_log(self, name: str) -> Path | None:
        path = self.paths(name).console_log
        return path if path.exists() else None

    async def close(self) -> None:
        """Detach from every container, leaving them running (they outlive the agent)."""
        loop = asyncio.get_running_loop()
        self.keeper.close()  # it keeps the masters: the consoles stay up without us
        self.consoles.close()
        for c in list(self._live.values()):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(c.pidfd)
            _close(c.pidfd)
            if c.relay is not None:
                await c.relay.close()
        self._live.clear()
        self.remove_cgroup_parent()  # where no container is left (rmdir fails on the others)
        for directory in (self.cfg.mount_root, self.cfg.mount_root.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()  # empty: no container mounted (nothing left in /run)

    # -- exec and live limits ----------------------------------------------------------

    async def exec(
        self, name: str, argv: builtins.list[str], timeout_s: float = EXEC_TIMEOUT_S
    ) -> ExecResult:
        """Run ``argv`` inside a running container and return its exit code and output."""
        self._require(name, PowerState.RUNNING)
        if not argv or not argv[0]:
            raise InvalidInputError("exec needs a command")
        result = await self.runtime.exec(name, argv, timeout_s)
        if result.exit_code in (127, 255) and any(m in result.stderr.lower() for m in _NOT_FOUND):
            raise InvalidInputError(f"command {argv[0]!r} not found in container {name!r}")
        return result

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        """Apply ``spec``'s CPU, memory and pids limits to the running container now."""
        c = self._live.get(name)
        if c is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        wanted = {k: v for k, v in resources(spec).items() if k in ("cpu", "memory", "pids")}
        if "pids" not in wanted:
            wanted["pids"] = {"limit": -1}  # unlimited
        try:
            await self.runtime.update(name, wanted)
        except ProcessError as err:
            raise InvalidInputError(f"cannot change limits of {name!r}: {err.message}") from err
        c.record = c.record.model_copy(update={"spec": spec})
        save(c.record, self.paths(name).record)

    # -- snapshots of the rootfs layer (stopped containers) ----------------------------

    def _snapshot_dir(self, name: str) -> Path:
        return self.cfg.layer_root / name / "snapshots"

    def _require_stopped(self, name: str) -> None:
        if name in self._live:
            raise InvalidStateError(self._live[name].power.value, "stopped")

    async def snapshot(self, name: str, snap: str) -> None:
        self._require_stopped(name)
        upper = self.layer_dir(name) / "upper"
        if not upper.is_dir():
            raise InvalidStateError("never started", "started at least once (it has no rootfs)")
        await asyncio.to_thread(layers.snapshot, upper, self._snapshot_dir(name) / f"{snap}.tar")

    async def restore(self, name: str, snap: str) -> None:
        self._require_stopped(name)
        await self._unmount(name)  # the layer is swapped underneath: never while mounted
        layer = self.layer_dir(name)
        path = self._snapshot_dir(name) / f"{snap}.tar"
        await asyncio.to_thread(layers.restore, path, layer / "upper", layer / "work")

    def snapshots(self, name: str) -> builtins.list[str]:
        return sorted(p.stem for p in self._snapshot_dir(name).glob("*.tar"))

    def delete_snapshot(self, name: str, snap: str) -> None:
        path = self._snapshot_dir(name) / f"{snap}.tar"
        if not path.is_file():
            raise NotFoundError(f"snapshot {snap!r} of {name!r} not found")
        path.unlink()


def cgroup_mounts() -> set[Path]:
    """Every cgroup hierarchy mounted here, named ones (name=systemd) included: the runtime
    makes the container's cgroup in each of them."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return set()
    return {m.mountpoint for m in parse_mountinfo(text)}


def _relay(master: int, paths: OciPaths) -> console.ConsoleRelay:
    try:
        return console.ConsoleRelay(master, paths.console_log, paths.console)
    except BaseException:
        _close(master)
        raise


async def _runtime_error(creating: asyncio.Task[str]) -> None:
    """Raise the runtime's own error if it failed: a runtime that fails while setting up
    the container (e.g. ``error preparing rootfs``) closes the console socket first."""
    done, _ = await asyncio.wait({creating}, timeout=RUNTIME_ERROR_WAIT_S)
    if done and not creating.cancelled() and creating.exception() is not None:
        creating.result()


async def _abandon(
    receiving: asyncio.Task[Master], creating: asyncio.Task[str], taken: bool
) -> None:
    """Stop a failed create: the runtime killed and reaped; a master received but not
    ``taken`` (nothing owns it yet) closed."""
    for task in (receiving, creating):
        task.cancel()
    await asyncio.wait({receiving, creating})
    for task in (receiving, creating):
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    received = not receiving.cancelled() and receiving.exception() is None
    if received and not taken:
        _close(receiving.result().fd)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _reset_context(spec: InstanceSpec) -> LaunchContext:
    return LaunchContext(Accel.AUTO, "container", {}, hostname=spec.name)
