"""The OCI bundle builder: ``InstanceSpec`` -> ``config.json`` (OCI runtime spec 1.0.2).

Pure and golden-tested (tests/unit/test_oci_bundle.py): namespaces (pid, mount,
uts, ipc, net, and user where the host allows), cgroup limits (CPU, memory,
pids), a reduced capability set (plus network administration
for containers with NICs), the default seccomp profile, masked and
read-only paths, the hostname. Must not touch files or processes: writing the
bundle and running it is the runtime runner's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtfleet.drivers.oci.seccomp import default_profile
from virtfleet.model.instance import InstanceSpec

OCI_VERSION = "1.0.2"
CPU_PERIOD_US = 100_000
INIT = "/sbin/init"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default set minus NET_RAW and MKNOD: enough for a distribution's init and daemons.
CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
NETWORK_CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW")
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class IdMap:
    """Container root is host uid/gid ``host_id``; ``size`` ids are mapped."""

    host_id: int
    size: int = 65536


@dataclass(frozen=True)
class BundleOptions:
    rootfs: Path
    cgroups_path: str  # absolute, e.g. "/virtfleet-1a2b/web": never under the caller's cgroup
    userns: IdMap | None = None
    terminal: bool = True  # init on a pty (the console); False: stdio as passed to the runtime
    args: tuple[str, ...] = (INIT,)
    env: tuple[str, ...] = ()  # empty: the system container's default environment
    cwd: str = "/"
    user: tuple[int, int] = (0, 0)  # uid, gid inside the container
    binds: tuple[tuple[str, str, bool], ...] = ()  # (destination, host source, read-only)


def build_config(spec: InstanceSpec, opts: BundleOptions) -> dict[str, Any]:
    """The complete config.json document for ``spec``."""
    return {
        "ociVersion": OCI_VERSION,
        "process": _process(opts, network=bool(spec.nics)),
        "root": {"path": str(opts.rootfs), "readonly": False},
        "hostname": spec.name,
        "mounts": _mounts(opts),
        "linux": _linux(spec, opts),
    }


def _process(opts: BundleOptions, network: bool = False) -> dict[str, Any]:
    # With NICs the container configures its own netns (link up, DHCP, ping): raw sockets
    # and netlink changes, confined to that namespace.
    caps = sorted([*CAPABILITIES, *NETWORK_CAPABILITIES]) if network else list(CAPABILITIES)
    return {
        "terminal": opts.terminal,
        "user": {"uid": opts.user[0], "gid": opts.user[1]},
        "args": list(opts.args),
        "env": list(opts.env) or [PATH_ENV, "TERM=xterm", "container=virtfleet"],
        "cwd": opts.cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
        "noNewPrivileges": True,
    }


def _mount(dest: str, fstype: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": fstype, "source": source, "options": options}


def _mounts(opts: BundleOptions) -> list[dict[str, Any]]:
    nosuid = ["nosuid", "noexec", "nodev"]
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if opts.userns is None:
        devpts.append("gid=5")  # tty group; inside a user namespace gid 5 may be unmapped
    binds = [
        _mount(dest, "bind", source, ["rbind", "nosuid", "nodev", "ro" if ro else "rw"])
        for dest, source, ro in opts.binds
    ]
    return [
        _mount("/proc", "proc", "proc", []),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts", devpts),
        _mount("/dev/shm", "tmpfs", "shm", [*nosuid, "mode=1777", "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", nosuid),
        _mount("/sys", "sysfs", "sysfs", [*nosuid, "ro"]),
        _mount("/run", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=755", "size=16384k"]),
        *binds,
    ]


def _linux(spec: InstanceSpec, opts: BundleOptions) -> dict[str, Any]:
    kinds = ["pid", "network", "ipc", "uts", "mount"]
    linux: dict[str, Any] = {}
    if opts.userns is not None:
        kinds.append("user")
        mapping = [{"containerID": 0, "hostID": opts.userns.host_id, "size": opts.userns.size}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
    linux.update(
        {
            "namespaces": [{"type": kind} for kind in kinds],
            "cgroupsPath": opts.cgroups_path,
            "resources": resources(spec),
            "seccomp": default_profile(),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        }
    )
    return linux


def resources(spec: InstanceSpec) -> dict[str, Any]:
    """The ``linux.resources`` section: devices deny-all, CPU quota = vcpus, memory, pids."""
    res: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": spec.memory_mib * 1024 * 1024},
        "cpu": {"quota": spec.vcpus * CPU_PERIOD_US, "period": CPU_PERIOD_US},
    }
    if spec.pids_max is not None:
        res["pids"] = {"limit": spec.pids_max}
    return res
