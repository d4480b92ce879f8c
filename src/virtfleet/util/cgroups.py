"""Per-instance cgroups (v1, v2 or hybrid hosts) for processes the platform launches.

Owns: detecting how cgroups are mounted, the directory layout
``<controller root>/<parent>/<instance>`` (``parent`` is a platform-unique
name from the caller, e.g. ``virtfleet-1a2b3c4d``, so several data dirs can
share a machine), writing CPU / memory / pids limits, reading usage, and
removing the directories again.

Placement: directories go under the root of each hierarchy as mounted here
(like libvirt's ``machine.slice``), not under the caller's own cgroup, so the
paths are stable across daemon restarts and any process can find them again.

Must not: kill or move processes (the launcher writes its own PID into
``InstanceCgroup.procs_files`` before exec'ing QEMU; in v1 memory already
charged does not follow a moved process), touch cgroups it did not create,
or fail hard when cgroups are unusable -- then ``available`` is False, a
``reason`` says why, and ``create`` returns a disabled ``InstanceCgroup``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from virtfleet.errors import HostError, InvalidInputError, InvalidNameError

log = logging.getLogger(__name__)

CgroupMode = Literal["v1", "v2", "hybrid", "none"]
CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")  # cpuacct: v1 usage accounting only
V2_CONTROLLERS = ("cpu", "memory", "pids")
DEFAULT_CPU_PERIOD_US = 100_000
_V1_CONTROLLERS = frozenset(
    [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "io",
        "devices",
        "freezer",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
        "misc",
    ]
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RMDIR_POLL_S = 0.05


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup/cgroup2 line of /proc/self/mountinfo."""

    mountpoint: Path
    fstype: str  # "cgroup" (v1) or "cgroup2"
    controllers: frozenset[str]  # v1 super options that name controllers


@dataclass(frozen=True)
class CgroupLayout:
    """Where each controller lives on this host."""

    mode: CgroupMode
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> v1 mount point
    unified: Path | None = None  # cgroup2 mount point


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts in a /proc/self/mountinfo text (pure)."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        opts = frozenset(tail[2].split(",")) & _V1_CONTROLLERS
        mounts.append(CgroupMount(Path(_unescape(fields[4])), tail[0], opts))
    return mounts


def layout_from_mounts(mounts: list[CgroupMount]) -> CgroupLayout:
    """Classify mounts as v1 / v2 / hybrid / none (pure)."""
    v1: dict[str, Path] = {}
    unified: Path | None = None
    for mount in mounts:
        if mount.fstype == "cgroup2":
            unified = unified or mount.mountpoint
        for ctrl in mount.controllers:
            v1.setdefault(ctrl, mount.mountpoint)
    if v1 and unified is not None:
        mode: CgroupMode = "hybrid"
    elif v1:
        mode = "v1"
    else:
        mode = "v2" if unified is not None else "none"
    return CgroupLayout(mode=mode, v1=v1, unified=unified)


def detect_layout(mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupLayout:
    """Read this host's cgroup layout; ``none`` when mountinfo is unreadable."""
    try:
        return layout_from_mounts(parse_mountinfo(mountinfo.read_text()))
    except OSError:
        return CgroupLayout(mode="none")


def detect_mode() -> CgroupMode:
    return detect_layout().mode


def _check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidNameError(f"invalid cgroup {what} name {name!r}", name=name)
    return name


def _write(path: Path, value: str) -> None:
    try:
        with path.open("w") as fh:
            fh.write(value)
    except OSError as err:
        raise HostError(f"cannot write {value!r} to {path}: {err.strerror}") from err


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight (1..10000, default 100) -> v1 cpu.shares (default 1024)."""
    return max(2, min(262_144, weight * 1024 // 100))


@dataclass
class InstanceCgroup:
    """The cgroup directories of one instance; empty ``dirs`` means disabled."""

    name: str
    unified: bool = False
    dirs: dict[str, Path] = field(default_factory=dict)  # controller -> directory
    reason: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.dirs)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(self.dirs.values()))

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """cgroup.procs files to write the launcher's own PID into before exec."""
        return tuple(path / "cgroup.procs" for path in self.paths)

    def _dir(self, controller: str) -> Path:
        if not self.dirs:
            raise HostError(f"cgroups unavailable for {self.name}: {self.reason}")
        path = self.dirs.get(controller)
        if path is None:
            raise HostError(f"cgroup controller {controller!r} is not available on this host")
        return path

    def pids(self) -> list[int]:
        """PIDs currently in the instance's cgroup(s)."""
        found: dict[int, None] = {}
        for procs in self.procs_files:
            for line in (_read(procs) or "").split():
                found[int(line)] = None
        return list(found)

    def set_cpu_quota(self, pct: float | None, period_us: int = DEFAULT_CPU_PERIOD_US) -> None:
        """Cap CPU time at ``pct`` percent of one CPU (200 = two CPUs); None lifts it."""
        if pct is not None and pct <= 0:
            raise InvalidInputError(f"cpu quota must be > 0 %, got {pct}")
        quota = None if pct is None else max(1000, round(pct / 100.0 * period_us))
        path = self._dir("cpu")
        if self.unified:
            _write(path / "cpu.max", f"{'max' if quota is None else quota} {period_us}")
            return
        _write(path / "cpu.cfs_period_us", str(period_us))
        _write(path / "cpu.cfs_quota_us", str(-1 if quota is None else quota))

    def set_cpu_weight(self, weight: int | None) -> None:
        """Relative CPU share (v2 scale 1..10000, 100 = default); None resets it."""
        weight = 100 if weight is None else weight
        if not 1 <= weight <= 10_000:
            raise InvalidInputError(f"cpu weight must be 1..10000, got {weight}")
        path = self._dir("cpu")
        if self.unified:
            _write(path / "cpu.weight", str(weight))
        else:
            _write(path / "cpu.shares", str(cpu_weight_to_shares(weight)))

    def set_memory_max(self, limit_bytes: int | None) -> None:
        """Hard memory limit in bytes; None lifts it."""
        if limit_bytes is not None and limit_bytes <= 0:
            raise InvalidInputError(f"memory limit must be > 0 bytes, got {limit_bytes}")
        path = self._dir("memory")
        if self.unified:
            _write(path / "memory.max", "max" if limit_bytes is None else str(limit_bytes))
        else:
            value = "-1" if limit_bytes is None else str(limit_bytes)
            _write(path / "memory.limit_in_bytes", value)

    def set_pids_max(self, limit: int | None) -> None:
        """Maximum number of tasks (threads count); None lifts it."""
        if limit is not None and limit <= 0:
            raise InvalidInputError(f"pids limit must be > 0, got {limit}")
        _write(self._dir("pids") / "pids.max", "max" if limit is None else str(limit))

    def cpu_usage_ns(self) -> int | None:
        """Total CPU time consumed, in nanoseconds (None if not measurable)."""
        if self.unified:
            stat = _read(self.paths[0] / "cpu.stat") if self.dirs else None
            for line in (stat or "").splitlines():
                key, _, usec = line.partition(" ")
                if key == "usage_usec":
                    return int(usec) * 1000
            return None
        acct = self.dirs.get("cpuacct")
        value = _read(acct / "cpuacct.usage") if acct else None
        return int(value) if value else None

    def memory_current_bytes(self) -> int | None:
        """Memory currently charged to the cgroup (None if not measurable)."""
        path = self.dirs.get("memory")
        if path is None:
            return None
        value = _read(path / ("memory.current" if self.unified else "memory.usage_in_bytes"))
        return int(value) if value else None

    def remove(self, timeout_s: float = 2.0) -> bool:
        """rmdir the directories; retries while tasks drain. True when all are gone."""
        return _rmdirs(self.paths, timeout_s)


def _rmdirs(paths: tuple[Path, ...], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pending = list(paths)
    while True:
        still: list[Path] = []
        for path in pending:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise HostError(f"cannot remove cgroup {path}: {err.strerror}") from err
                still.append(path)
        if not still:
            return True
        if time.monotonic() >= deadline:
            log.warning("cgroups still busy after %.1f s: %s", timeout_s, still)
            return False
        pending = still
        time.sleep(_RMDIR_POLL_S)


class CgroupManager:
    """Creates ``<root>/<parent>/<instance>`` cgroups for one virtfleet data dir."""

    def __init__(self, parent: str, layout: CgroupLayout | None = None) -> None:
        self.parent = _check_name(parent, "parent")
        self.layout = layout if layout is not None else detect_layout()
        self._roots, self.reason = self._usable_roots()
        self._v2_ready = False

    @property
    def available(self) -> bool:
        return bool(self._roots)

    @property
    def unified(self) -> bool:
        return self.layout.mode == "v2"

    def mode(self) -> CgroupMode:
        return self.layout.mode

    def _usable_roots(self) -> tuple[dict[str, Path], str]:
        """controller -> hierarchy root we may write to, or ({}, why not)."""
        layout = self.layout
        if layout.mode == "none":
            return {}, "no cgroup hierarchy is mounted"
        if layout.mode == "v2":
            assert layout.unified is not None
            offered = set((_read(layout.unified / "cgroup.controllers") or "").split())
            roots = {c: layout.unified for c in V2_CONTROLLERS if c in offered}
        else:
            roots = {c: layout.v1[c] for c in CONTROLLERS if c in layout.v1}
        if not roots:
            return {}, f"none of the cpu, memory, pids controllers is available ({layout.mode})"
        writable = {c: p for c, p in roots.items() if os.access(p, os.W_OK)}
        if not writable:
            return {}, f"no write access to the cgroup hierarchy (uid {os.geteuid()})"
        return writable, ""

    def _parent_dirs(self) -> dict[str, Path]:
        return {c: root / self.parent for c, root in self._roots.items()}

    def _enable_v2(self, path: Path) -> set[str]:
        """Enable cpu/memory/pids for the children of ``path``; return what is enabled."""
        offered = set((_read(path / "cgroup.controllers") or "").split())
        enabled = set((_read(path / "cgroup.subtree_control") or "").split())
        wanted = [c for c in V2_CONTROLLERS if c in offered and c not in enabled]
        if not wanted:
            return enabled
        try:
            _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            return enabled | set(wanted)
        except HostError:
            pass
        for ctrl in wanted:  # one at a time: keep whatever the kernel allows
            with contextlib.suppress(HostError):
                _write(path / "cgroup.subtree_control", f"+{ctrl}")
                enabled.add(ctrl)
        return enabled

    def _prepare_parent(self) -> None:
        """mkdir the parent directories; on v2 also delegate the controllers to them."""
        if not self.unified:
            for path in self._parent_dirs().values():
                path.mkdir(exist_ok=True)
            return
        if self._v2_ready:
            return
        root = self.layout.unified
        assert root is not None
        self._enable_v2(root)
        (root / self.parent).mkdir(exist_ok=True)
        enabled = self._enable_v2(root / self.parent)
        self._roots = {c: p for c, p in self._roots.items() if c in enabled}
        if not self._roots:
            raise HostError(f"none of {', '.join(V2_CONTROLLERS)} could be enabled under {root}")
        self._v2_ready = True

    def _instance_dirs(self, instance: str) -> dict[str, Path]:
        dirs = {c: p / instance for c, p in self._parent_dirs().items()}
        if self.unified and not self._v2_ready:  # e.g. after a restart: ask the parent
            parent = next(iter(self._parent_dirs().values()))
            enabled = _read(parent / "cgroup.subtree_control")
            if enabled is not None:
                dirs = {c: p for c, p in dirs.items() if c in enabled.split()}
        return dirs

    def get(self, instance: str) -> InstanceCgroup:
        """The cgroup of ``instance`` without creating anything (for live changes)."""
        _check_name(instance, "instance")
        if not self.available:
            return InstanceCgroup(instance, self.unified, {}, self.reason)
        return InstanceCgroup(instance, self.unified, self._instance_dirs(instance))

    def create(
        self,
        instance: str,
        *,
        cpu_quota_pct: float | None = None,
        cpu_weight: int | None = None,
        memory_max_bytes: int | None = None,
        pids_max: int | None = None,
    ) -> InstanceCgroup:
        """Make (or reuse) the instance's cgroup and apply the given limits.

        Limits for controllers this host lacks are skipped and named in ``reason``.
        """
        _check_name(instance, "instance")
        if self.available:
            try:
                self._prepare_parent()
            except (HostError, OSError) as err:
                why = err.message if isinstance(err, HostError) else str(err.strerror)
                log.warning("cgroups disabled for %s: %s", self.parent, why)
                self._roots, self.reason = {}, f"cannot prepare cgroup {self.parent}: {why}"
        cgroup = self.get(instance)
        if not cgroup.enabled:
            return cgroup
        try:
            for path in cgroup.paths:
                path.mkdir(exist_ok=True)
            _apply(cgroup, cpu_quota_pct, cpu_weight, memory_max_bytes, pids_max)
        except OSError as err:
            cgroup.remove(timeout_s=0)
            raise HostError(f"cannot create cgroup for {instance}: {err.strerror}") from err
        except Exception:
            cgroup.remove(timeout_s=0)
            raise
        return cgroup

    def remove_parent_if_empty(self) -> bool:
        """rmdir the parent directories that hold no cgroup any more (quietly: one with a
        running instance's or container's cgroup in it stays). True if all are gone."""
        gone = True
        for path in dict.fromkeys(self._parent_dirs().values()):
            try:
                if any(child.is_dir() for child in path.iterdir()):
                    gone = False
                    continue
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                gone = False
        self._v2_ready = False
        return gone

    def remove_parent(self, timeout_s: float = 0.0) -> bool:
        """rmdir the parent directories if no instance cgroups remain in them."""
        paths = tuple(dict.fromkeys(self._parent_dirs().values()))
        self._v2_ready = False
        with contextlib.suppress(HostError):
            return _rmdirs(paths, timeout_s)
        return False


def _apply(
    cgroup: InstanceCgroup,
    cpu_quota_pct: float | None,
    cpu_weight: int | None,
    memory_max_bytes: int | None,
    pids_max: int | None,
) -> None:
    """Write the requested limits; skip (and note) those whose controller is missing."""
    has = cgroup.dirs
    if cpu_quota_pct is not None and "cpu" in has:
        cgroup.set_cpu_quota(cpu_quota_pct)
    if cpu_weight is not None and "cpu" in has:
        cgroup.set_cpu_weight(cpu_weight)
    if memory_max_bytes is not None and "memory" in has:
        cgroup.set_memory_max(memory_max_bytes)
    if pids_max is not None and "pids" in has:
        cgroup.set_pids_max(pids_max)
    asked = {"cpu": (cpu_quota_pct, cpu_weight), "memory": (memory_max_bytes,), "pids": (pids_max,)}
    missing = [
        c for c, values in asked.items() if c not in has and any(v is not None for v in values)
    ]
    if missing:
        cgroup.reason = f"not enforced, controller missing: {', '.join(missing)}"
        log.warning("cgroup %s: limits %s", cgroup.name, cgroup.reason)
