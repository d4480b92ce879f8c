"""--driver-iso: a Windows VM's driver CD-ROM names a host file, checked like an import's
source when the VM is made (over TCP only admins, only in the import directory; never
through a symbolic link) and opened by the agent at each start, which hands the driver
the open file; what cannot be used is refused with a stable code, nothing written."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.qemu.firmware import OVMF_DIR
from virtfleet.model.auth import Role
from virtfleet.model.instance import InstanceSpec, InstanceStatus

from .accounts import Accounts
from .helpers import act, assert_error, snapshot, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.skipif(
    not (OVMF_DIR / "OVMF_VARS_4M.ms.fd").is_file(), reason="Debian's ovmf is not installed"
)
Start = Callable[[InstanceSpec, LaunchContext], Awaitable[InstanceStatus]]


def _body(name: str, iso: str | Path, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "tiny", "os": "windows", "driver_iso": str(iso), **more}


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    path = tmp_path / "virtio-win.iso"
    path.write_bytes(b"CD001" * 1000)
    return path


@pytest.fixture
def import_dir(platform: Platform) -> Path:
    return platform.services.images.paths.import_dir


def _watch_starts(driver: TestDriver, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inode of the driver ISO each start handed the driver (as an open descriptor)."""
    seen: list[int] = []
    original: Start = driver.start

    async def start(spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        if ctx.driver_iso_fd is not None:
            seen.append(os.fstat(ctx.driver_iso_fd).st_ino)
        return await original(spec, ctx)

    monkeypatch.setattr(driver, "start", start)
    return seen


async def test_the_local_root_names_any_iso_and_every_start_gets_it_open(
    api: httpx.AsyncClient, image: str, iso: Path, driver: TestDriver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Over the Unix socket any host path is the root's own choice; the spec keeps it, and
    each start gives the driver that very file, open (not its path)."""
    seen = _watch_starts(driver, monkeypatch)
    r = await api.post("/1.0/instances", json=_body("win", iso, start=True))
    assert (await wait_op(api, r))["status"] == "success"
    assert (await api.get("/1.0/instances/win")).json()["spec"]["driver_iso"] == str(iso)
    assert (await act(api, "win", "restart"))["status"] == "success"
    assert seen == [iso.stat().st_ino] * 2


async def test_over_tcp_only_an_admin_names_an_iso_and_only_in_the_import_directory(
    accounts: Accounts, image: str, iso: Path, import_dir: Path
) -> None:
    """A TCP admin may name an ISO in the import directory, not /etc/shadow nor a file
    outside it (path_not_allowed); an operator may name none (forbidden)."""
    admin = await accounts.token(Role.ADMIN)
    inside = import_dir / "drivers.iso"
    inside.write_bytes(b"CD001")
    r = await admin.post("/1.0/instances", json=_body("ok", inside))
    assert (await wait_op(admin, r))["status"] == "success"
    for path in (iso, "/etc/shadow", f"{import_dir}/../secret.iso"):
        r = await admin.post("/1.0/instances", json=_body("no", path))
        assert_error(r, 403, "path_not_allowed")
    operator = await accounts.token(Role.OPERATOR)
    r = await operator.post("/1.0/instances", json=_body("op", inside))
    assert "needs role admin" in assert_error(r, 403, "forbidden")


async def test_unusable_isos_are_refused_and_nothing_is_written(
    api: httpx.AsyncClient, image: str, iso: Path, platform: Platform
) -> None:
    """A symbolic link (path_not_allowed), a missing file (not_found), a directory, a
    relative path or a Linux VM (invalid_input): refused, the store unchanged."""
    link = iso.with_name("link.iso")
    link.symlink_to(iso)
    before = await snapshot(platform.store)
    assert_error(await api.post("/1.0/instances", json=_body("a", link)), 403, "path_not_allowed")
    missing = iso.with_name("none.iso")
    assert_error(await api.post("/1.0/instances", json=_body("a", missing)), 404, "not_found")
    for body in (_body("a", iso.parent), _body("a", "virtio-win.iso"),
                 _body("a", iso, os="linux")):  # fmt: skip
        assert_error(await api.post("/1.0/instances", json=body), 400, "invalid_input")
    assert await snapshot(platform.store) == before


async def test_an_iso_that_became_a_symbolic_link_fails_the_start(
    api: httpx.AsyncClient, image: str, iso: Path, tmp_path: Path, platform: Platform
) -> None:
    """The agent opens the path again at each start without following a link: a file
    swapped for a link to a secret since the VM was made fails the start, and the VM,
    which never ran, stays stopped."""
    r = await api.post("/1.0/instances", json=_body("win", iso))
    assert (await wait_op(api, r))["status"] == "success"
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret")
    iso.unlink()
    iso.symlink_to(secret)
    op = await act(api, "win", "start")
    assert op["status"] == "failure" and op["error_code"] == "path_not_allowed", op
    assert (await api.get("/1.0/instances/win")).json()["status"]["power"] == "stopped"
