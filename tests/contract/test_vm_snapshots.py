"""The ``SupportsVmSnapshots`` contract (drivers/base.py), the same for the fake and QEMU:
a running VM switches onto the host's overlays and keeps running; merging folds the layer
below into the top, which then sits on the given backing; a RAM state saved with a snapshot
loads into a start deferred for it; stopped VMs and unknown disks are refused.

The host's part (host/snapshots.py) is played here: it makes each overlay over the name
the active file is about to get, and renames the files after the switch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.test_driver import _HARNESSES, Harness
from virtfleet.drivers.base import SupportsVmSnapshots
from virtfleet.errors import InvalidStateError, NotFoundError
from virtfleet.model.instance import PowerState
from virtfleet.storage import qemuimg


# The VM drivers only: containers snapshot their rootfs (and a skipped integration case
# fails CI).
@pytest.fixture(params=["fake", pytest.param("qemu", marks=pytest.mark.integration)])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    gen = _HARNESSES[request.param]()
    harness = await anext(gen)
    yield harness
    await gen.aclose()


def _driver(harness: Harness) -> SupportsVmSnapshots:
    assert harness.kind == "vm" and isinstance(harness.driver, SupportsVmSnapshots)
    return harness.driver


async def _snapshot(
    harness: Harness, name: str, state: Path | None = None
) -> tuple[Path, Path, float | None]:
    """Snapshot ``name``'s root disk as the host does: (active file, frozen file, pause)."""
    active = harness.make_ctx(name).disks["root"]
    frozen = active.with_name(f"{name}-frozen.qcow2")
    new = active.with_name(f".new-{name}.qcow2")
    await qemuimg.overlay(new, frozen, await qemuimg.virtual_size(active))
    pause = await _driver(harness).snapshot_disks(name, {"root": new}, state)
    active.rename(frozen)
    new.rename(active)
    return active, frozen, pause


async def _backing(path: Path) -> str:
    return str((await qemuimg.info(path, "qcow2", shared=True))[0].get("full-backing-filename", ""))


async def test_a_running_vm_switches_onto_an_overlay_and_merges_it_back(h: Harness) -> None:
    driver = _driver(h)
    await h.start("v1")
    active, frozen, pause = await _snapshot(h, "v1")
    assert pause is None  # no RAM saved, no pause
    assert (await h.driver.status("v1")).power is PowerState.RUNNING
    assert await _backing(active) == str(frozen)
    below = await _backing(frozen)
    await driver.merge_disk("v1", "root", below)
    assert await _backing(active) == below  # the frozen layer is out of the chain
    assert (await h.driver.status("v1")).power is PowerState.RUNNING


async def test_stopped_vms_and_unknown_disks_are_refused(h: Harness) -> None:
    driver = _driver(h)
    overlay = h.make_ctx("v2").disks["root"]
    with pytest.raises(InvalidStateError):
        await driver.snapshot_disks("v2", {"root": overlay})
    with pytest.raises(InvalidStateError):
        await driver.merge_disk("v2", "root", "")
    await h.start("v2")
    with pytest.raises(NotFoundError):
        await driver.snapshot_disks("v2", {"nope": overlay})
    with pytest.raises(NotFoundError):
        await driver.merge_disk("v2", "nope", "")
    assert (await h.driver.status("v2")).power is PowerState.RUNNING


async def test_a_saved_state_loads_into_a_deferred_start(h: Harness, tmp_path: Path) -> None:
    driver = _driver(h)
    await h.start("v3")
    state = tmp_path / "memory.state"
    _, _, pause = await _snapshot(h, "v3", state)
    assert pause is not None and pause >= 0
    assert state.stat().st_size > 0 and state.stat().st_mode & 0o077 == 0
    assert (await h.driver.status("v3")).power is PowerState.RUNNING  # resumed after the save
    await h.driver.stop("v3", force=True)
    await h.next_event("v3", "stopped")
    driver.defer_start("v3")
    await h.driver.start(h.spec("v3"), h.make_ctx("v3"))
    await driver.load_state("v3", state)
    assert (await h.driver.status("v3")).power is PowerState.RUNNING
