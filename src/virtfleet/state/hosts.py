"""Host records and their liveness keys in the store.

Keys (built in ``state/keys.py``):
    /hosts/{id}         HostRecord   written by that host's daemon at every start
    /hosts/{id}/alive   {"since"}    on a lease the host's daemon keeps alive

A host whose lease lapsed (daemon gone, host cut off) loses its ``alive`` key: readers
show it ``offline`` whatever its record says. Must not decide anything else.
"""

from __future__ import annotations

import builtins
import json
from datetime import UTC, datetime

from virtfleet.errors import NotFoundError
from virtfleet.model.host import HostRecord, HostState
from virtfleet.state.keys import ALIVE, HOSTS, alive_key, host_key
from virtfleet.state.store import Put, StateStore


class HostRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def register(self, record: HostRecord, lease: int) -> None:
        """Write ``record`` and its liveness key on ``lease`` in one commit."""
        stored = record.model_copy(update={"alive": False})
        since = json.dumps({"since": datetime.now(UTC).isoformat()}).encode()
        await self.store.txn(
            [],
            [
                Put(host_key(record.id), stored.model_dump_json().encode()),
                Put(alive_key(record.id), since, lease=lease),
            ],
        )

    async def list(self) -> builtins.list[HostRecord]:
        """Every host, ``alive`` and ``state`` as their liveness keys say, by name."""
        records: dict[str, HostRecord] = {}
        alive: set[str] = set()
        for kv in await self.store.list(HOSTS):
            rest = kv.key[len(HOSTS) :]
            if rest.endswith(f"/{ALIVE}"):
                alive.add(rest.split("/", 1)[0])
            elif "/" not in rest:
                records[rest] = HostRecord.model_validate_json(kv.value)
        hosts = [_seen(rec, rec.id in alive) for rec in records.values()]
        return sorted(hosts, key=lambda h: (h.name, h.id))

    async def get(self, id_or_name: str) -> HostRecord:
        """The host with this id, else the one with this name; ``NotFoundError``."""
        hosts = await self.list()
        for host in hosts:
            if host.id == id_or_name:
                return host
        named = [h for h in hosts if h.name == id_or_name]
        if not named:
            raise NotFoundError(f"host {id_or_name!r} not found")
        return named[0]

    async def is_alive(self, host_id: str) -> bool:
        return await self.store.get(alive_key(host_id)) is not None


def _seen(record: HostRecord, alive: bool) -> HostRecord:
    state = record.state if alive else HostState.OFFLINE
    return record.model_copy(update={"alive": alive, "state": state})
