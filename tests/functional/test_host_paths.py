"""Imports and exports name host files: over TCP an admin is confined to the import and
export directories, the local root (Unix socket) may name any path, symbolic links are
never followed, and images whose metadata names another host file are refused
(real qemu-img, in its jail)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role

from .accounts import Accounts

SECRET = b"TOP-SECRET-HOST-FILE-" + b"x" * 43  # one 64-byte line, easy to find in a dump


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


async def _wait(client: httpx.AsyncClient, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    url = f"/1.0/operations/{r.json()['id']}/wait"
    op: dict[str, Any] = (await client.get(url, params={"timeout_s": 60})).json()
    return op


@pytest.fixture
def dirs(platform: Platform) -> tuple[Path, Path]:
    paths = platform.services.images.paths
    return paths.import_dir, paths.export_dir


@pytest.fixture
async def admin(accounts: Accounts) -> httpx.AsyncClient:
    """An admin over TCP (bearer token): confined."""
    return await accounts.token(Role.ADMIN)


@pytest.fixture
def raw(dirs: tuple[Path, Path]) -> Path:
    path = dirs[0] / "disk.raw"
    path.write_bytes(os.urandom(1 << 20))
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only host file an attacker wants to read."""
    path = tmp_path / "secret"
    path.write_bytes(SECRET * 16384)  # 1 MiB
    path.chmod(0o600)
    return path


async def test_tcp_admin_imports_only_from_the_import_directory(
    admin: httpx.AsyncClient, raw: Path, secret: Path
) -> None:
    """A name in the import directory works; a host path outside it or a '..' is 403."""
    op = await _wait(
        admin, await admin.post("/1.0/images/import", json={"name": "a", "path": raw.name})
    )
    assert op["status"] == "success", op
    for path in (str(secret), "/etc/shadow", "../secret", f"{raw.parent}/../secret"):
        r = await admin.post("/1.0/images/import", json={"name": "b", "path": path})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "path_not_allowed"


async def test_tcp_admin_exports_only_into_the_export_directory(
    admin: httpx.AsyncClient, raw: Path, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """'/etc/cron.d/x' is refused (403); a new name in the export directory is written."""
    op = await _wait(
        admin, await admin.post("/1.0/images/import", json={"name": "a", "path": raw.name})
    )
    assert op["status"] == "success", op
    for path in ("/etc/cron.d/virtfleet-test", str(tmp_path / "out.raw"), "../out.raw"):
        r = await admin.post("/1.0/images/a/export", json={"path": path, "format": "raw"})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "path_not_allowed"
    assert not Path("/etc/cron.d/virtfleet-test").exists()
    r = await admin.post("/1.0/images/a/export", json={"path": "out.raw", "format": "raw"})
    assert (await _wait(admin, r))["status"] == "success"
    assert (dirs[1] / "out.raw").read_bytes() == raw.read_bytes()


async def test_local_root_may_name_any_path(api: httpx.AsyncClient, tmp_path: Path) -> None:
    """Over the Unix socket (root on this host anyway) paths outside the directories work,
    including a root-only source file the jailed qemu-img cannot open itself."""
    src = tmp_path / "private.raw"
    src.write_bytes(os.urandom(1 << 20))
    src.chmod(0o600)
    r = await api.post("/1.0/images/import", json={"name": "p", "path": str(src)})
    assert (await _wait(api, r))["status"] == "success"
    out = tmp_path / "exported.raw"
    r = await api.post("/1.0/images/p/export", json={"path": str(out), "format": "raw"})
    assert (await _wait(api, r))["status"] == "success"
    assert out.read_bytes() == src.read_bytes()


async def test_a_symlink_planted_in_the_export_directory_is_not_followed(
    admin: httpx.AsyncClient, raw: Path, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A link at the target name (to a root-owned file) or as a subdirectory (to a
    directory elsewhere) is refused, and what it points at is untouched."""
    op = await _wait(
        admin, await admin.post("/1.0/images/import", json={"name": "a", "path": raw.name})
    )
    assert op["status"] == "success", op
    victim = tmp_path / "victim"
    victim.write_text("root-owned content\n")
    (dirs[1] / "planted.raw").symlink_to(victim)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (dirs[1] / "sub").symlink_to(elsewhere, target_is_directory=True)
    r = await admin.post("/1.0/images/a/export", json={"path": "planted.raw", "format": "raw"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_exists", r.text
    r = await admin.post("/1.0/images/a/export", json={"path": "sub/out.raw", "format": "raw"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed", r.text
    assert victim.read_text() == "root-owned content\n"
    assert list(elsewhere.iterdir()) == []


async def test_a_symlink_planted_in_the_import_directory_is_not_followed(
    admin: httpx.AsyncClient, dirs: tuple[Path, Path], secret: Path
) -> None:
    """A link in the import directory to a root-only file is refused (403), not read."""
    (dirs[0] / "link.raw").symlink_to(secret)
    r = await admin.post("/1.0/images/import", json={"name": "l", "path": "link.raw"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed", r.text


def _hostile(dirs: tuple[Path, Path], secret: Path) -> dict[str, Path]:
    qcow2 = dirs[0] / "data-file.qcow2"
    _qemu_img(
        "create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", qcow2, "1M"
    )
    vmdk = dirs[0] / "extent.vmdk"
    vmdk.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\nRW 2048 FLAT "{secret}" 0\n'
    )
    backing = dirs[0] / "backing.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", backing)
    json_backing = dirs[0] / "json-backing.qcow2"
    spec = f'json:{{"driver":"raw","file":{{"driver":"file","filename":"{secret}"}}}}'
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", spec, "-F", "raw", json_backing, "1M")
    return {"qcow2 data-file": qcow2, "vmdk extent": vmdk, "backing": backing,
            "json: backing": json_backing}  # fmt: skip


async def test_images_naming_host_files_are_refused(
    api: httpx.AsyncClient, platform: Platform, dirs: tuple[Path, Path], secret: Path
) -> None:
    """qcow2 data-file, VMDK extent, backing file, json: backing: 422 unsafe_image in one
    line, for the local root too; the secret is in no file the daemon wrote."""
    for what, path in _hostile(dirs, secret).items():
        r = await api.post("/1.0/images/import", json={"name": "evil", "path": str(path)})
        assert r.status_code == 422, (what, r.text)
        body = r.json()["error"]
        assert body["code"] == "unsafe_image" and "\n" not in body["message"], (what, body)
    data_dir = platform.settings.data_dir
    for file in (p for p in data_dir.rglob("*") if p.is_file()):
        assert SECRET not in file.read_bytes(), file
    assert (await api.get("/1.0/images")).json() == []


async def test_a_fifo_or_device_is_refused_without_hanging(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, dirs: tuple[Path, Path]
) -> None:
    """A FIFO planted in the import directory (opening it would block) and a device named
    by the local root are refused as not regular files (400)."""
    os.mkfifo(dirs[0] / "pipe.raw")
    r = await admin.post("/1.0/images/import", json={"name": "f", "path": "pipe.raw"})
    assert r.status_code == 400 and "not a regular file" in r.json()["error"]["message"], r.text
    r = await api.post("/1.0/images/import", json={"name": "d", "path": "/dev/zero"})
    assert r.status_code == 400 and "not a regular file" in r.json()["error"]["message"], r.text
