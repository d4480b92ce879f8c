"""The boot record in the store: ``/host/boot`` (``model.boot.BootReport``).

The one key the boot sequence (``service.boot``) reads and writes; nothing else.
"""

from __future__ import annotations

from virtfleet.model.boot import BootReport
from virtfleet.state.keys import BOOT
from virtfleet.state.store import Put, StateStore


class BootRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def get(self) -> BootReport | None:
        kv = await self.store.get(BOOT)
        return None if kv is None else BootReport.model_validate_json(kv.value)

    async def put(self, report: BootReport) -> None:
        await self.store.txn([], [Put(BOOT, report.model_dump_json().encode())])
