"""Containers on the in-process platform: a ``ContainerOps`` that keeps rootfs snapshots
and answers exec in memory, and a stand-in ``container-tiny`` rootfs builder.

The fake driver runs a container's power verbs like a VM's (it only keeps states);
these add what is container-only, so CLI tests can drive both kinds through one daemon.
"""

from __future__ import annotations

import builtins
import tarfile
from pathlib import Path

from virtfleet.app.bootstrap import Platform
from virtfleet.errors import NotFoundError
from virtfleet.host.ops import LockedContainers
from virtfleet.model.container import ExecOutput
from virtfleet.model.instance import InstanceSpec
from virtfleet.storage.images import Progress


class FakeContainerOps:
    """Rootfs snapshots as names per container; exec echoes its argv (exit code 3 for
    ``false``), so a test sees the command reached the container."""

    def __init__(self) -> None:
        self.snaps: dict[str, list[str]] = {}
        self.restored: list[tuple[str, str]] = []

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float) -> ExecOutput:
        code = 3 if argv[0] == "false" else 0
        return ExecOutput(exit_code=code, stdout=f"{name}: {' '.join(argv)}\n", stderr="")

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        return None

    async def snapshot(self, name: str, snap: str) -> None:
        self.snaps.setdefault(name, []).append(snap)

    async def restore(self, name: str, snap: str) -> None:
        self._known(name, snap)
        self.restored.append((name, snap))

    def snapshots(self, name: str) -> builtins.list[str]:
        return list(self.snaps.get(name, []))

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._known(name, snap)
        self.snaps[name].remove(snap)

    def _known(self, name: str, snap: str) -> None:
        if snap not in self.snaps.get(name, []):
            raise NotFoundError(f"container {name!r} has no snapshot {snap!r}")


def fake_rootfs_build(out: Path, cache_dir: Path, progress: Progress | None) -> None:
    """A stand-in rootfs builder: an empty tarball (the fake driver never unpacks it)."""
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w"):
        pass
    tmp.rename(out)


def with_containers(platform: Platform) -> FakeContainerOps:
    """Give ``platform`` the ``container-tiny`` builder and container ops; return the ops."""
    ops = FakeContainerOps()
    platform.services.images.store.add_builder("container-tiny", lambda: fake_rootfs_build)
    door = platform.host.ops.containers
    assert isinstance(door, LockedContainers)
    door.runtime = ops  # what bootstrap fills from the OCI driver, behind the door's lock
    return ops
