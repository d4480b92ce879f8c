"""The ``fake`` back-end: volumes kept in memory, held to the same contract tests as the
file back-ends (tests/contract/test_pools.py), so service tests need no disk files.

Not registered unless imported (tests do): users cannot make one. Owns nothing but that
bookkeeping (by pool path, so each test's pools are apart). It claims every capability,
so callers' capability checks are exercised; its probe always succeeds.
"""

from __future__ import annotations

from pathlib import Path

from virtfleet.errors import AlreadyExistsError, ImageError
from virtfleet.model.pools import EVERY_CAPABILITY, HostCheck, PoolRecord
from virtfleet.storage.pools.base import PoolContext, Space, VolumeInfo, register

TOTAL = 100 << 30
_VOLUMES: dict[str, dict[tuple[str, str], int]] = {}  # path -> (instance, disk) -> size


class FakePool:
    capabilities = EVERY_CAPABILITY

    def __init__(self, record: PoolRecord, ctx: PoolContext) -> None:
        self.record = record
        self._mine = _VOLUMES.setdefault(record.path or record.name, {})

    def validate(self) -> None:
        return None

    def prepare(self) -> str | None:
        return "fake"

    def probe(self, host_id: str) -> HostCheck:
        return HostCheck(host=host_id, reachable=True, marker_ok=True, lock_ok=True)

    def space(self) -> Space:
        return Space(TOTAL, TOTAL - sum(self._mine.values()))

    def volumes(self) -> list[VolumeInfo]:
        return [
            VolumeInfo(i, d, self.volume_path(i, d), size, size)
            for (i, d), size in sorted(self._mine.items())
        ]

    def volume_path(self, instance: str, disk: str) -> Path:
        return Path("/fake", self.record.name, instance, f"{disk}.qcow2")

    async def create_volume(
        self, instance: str, disk: str, size_bytes: int, backing: Path | None = None
    ) -> Path:
        if (instance, disk) in self._mine:
            raise AlreadyExistsError(f"volume {instance}/{disk} exists in pool {self.record.name}")
        if size_bytes <= 0:
            raise ImageError(f"volume {instance}/{disk} needs a size")
        self._mine[instance, disk] = size_bytes
        return self.volume_path(instance, disk)

    async def grow_volume(self, instance: str, disk: str, size_bytes: int) -> None:
        key = (instance, disk)
        self._mine[key] = max(self._mine[key], size_bytes)

    def delete_volume(self, instance: str, disk: str) -> None:
        self._mine.pop((instance, disk), None)

    def destroy(self) -> None:
        _VOLUMES.pop(self.record.path or self.record.name, None)


register("fake")(FakePool)
