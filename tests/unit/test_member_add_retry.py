"""Admitting a member while etcd says "unhealthy cluster" (a member joined under 5 s ago:
two hosts joining one after the other) asks again until etcd allows it; any other store
error is the answer at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from virtfleet.app import clustering
from virtfleet.app.clustering import EtcdAdmin
from virtfleet.errors import StoreUnavailableError
from virtfleet.state.etcd import AddedMember, EtcdStore


class RefusingStore:
    """An etcd whose member add is refused ``refusals`` times with ``message``."""

    def __init__(self, refusals: int, message: str) -> None:
        self.refusals, self.message, self.calls = refusals, message, 0

    async def add_learner(self, name: str, peer_urls: list[str]) -> AddedMember:
        self.calls += 1
        if self.calls <= self.refusals:
            raise StoreUnavailableError(f"etcd is unavailable: {self.message}")
        return AddedMember("abc", f"{name}={peer_urls[0]}", ["https://10.0.0.1:2379"])


def _admin(tmp_path: Path, store: RefusingStore) -> EtcdAdmin:
    return EtcdAdmin(tmp_path, cast(EtcdStore, store))


async def test_add_asks_again_while_etcd_says_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RefusingStore(2, "etcdserver: unhealthy cluster")
    sleeps: list[float] = []

    async def no_wait(delay: float, *_: Any) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(clustering.asyncio, "sleep", no_wait)
    added = await _admin(tmp_path, store).add("h3", "https://10.0.0.3:2380")
    assert added == ("abc", "h3=https://10.0.0.3:2380", ["https://10.0.0.1:2379"])
    assert store.calls == 3 and sleeps == [0.5, 0.5]


async def test_other_store_errors_are_not_retried(tmp_path: Path) -> None:
    store = RefusingStore(1, "etcdserver: no leader")
    with pytest.raises(StoreUnavailableError, match="no leader"):
        await _admin(tmp_path, store).add("h3", "https://10.0.0.3:2380")
    assert store.calls == 1
