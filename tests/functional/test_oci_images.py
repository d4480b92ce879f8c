"""Importing OCI layouts and docker archives through the API: config and layers shown,
layers shared between images and kept while another image uses them, hostile images
refused as a failed operation with nothing recorded or left in the layer store."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ocilayouts import Entry, image_config, layer_tar, write_docker_archive, write_layout
from virtfleet.storage.oci.source import host_arch

from .helpers import assert_error, wait_op
from .platform import Platform

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep owners: needs root")
RUN = {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["MODE=test"]}


def _layers() -> list[bytes]:
    return [
        layer_tar([Entry("bin/app", b"#!/bin/sh\n", mode=0o755), Entry("etc/old", b"x")]),
        layer_tar([Entry("etc/.wh.old")]),
    ]


async def _import(api: httpx.AsyncClient, name: str, path: Path) -> dict[str, Any]:
    r = await api.post("/1.0/images/import-oci", json={"name": name, "path": str(path)})
    return await wait_op(api, r)


def _store(platform: Platform) -> Path:
    return Path(platform.services.images.store.layers.root)


async def test_layout_and_docker_archive_share_layers_until_both_are_deleted(
    api: httpx.AsyncClient, platform: Platform, tmp_path: Path
) -> None:
    layers = _layers()
    config = image_config(layers, RUN, arch=host_arch())
    write_layout(tmp_path / "layout", layers, config)
    write_docker_archive(tmp_path / "saved.tar", layers, config)
    assert (await _import(api, "app", tmp_path / "layout"))["status"] == "success"
    assert (await _import(api, "app2", tmp_path / "saved.tar"))["status"] == "success"
    first = (await api.get("/1.0/images/app")).json()
    second = (await api.get("/1.0/images/app2")).json()
    assert first["format"] == "oci" and first["oci"]["format"] == "oci"
    assert second["oci"]["format"] == "docker-archive"
    assert first["oci"]["config"]["entrypoint"] == ["/bin/app"]
    assert first["oci"]["config"]["env"] == ["MODE=test"]
    ids = [x["diff_id"] for x in first["oci"]["layers"]]
    assert [x["diff_id"] for x in second["oci"]["layers"]] == ids and len(ids) == 2
    store = _store(platform)
    assert sorted(p.name for p in (store / "sha256").iterdir() if p.is_dir()) == sorted(
        i.removeprefix("sha256:") for i in ids
    )
    assert (await api.delete("/1.0/images/app")).json()["deleted"] is True
    assert all((store / "sha256" / i.removeprefix("sha256:")).is_dir() for i in ids)
    assert (await api.delete("/1.0/images/app2")).json()["deleted"] is True
    assert list((store / "sha256").iterdir()) == []


async def test_a_hostile_image_fails_with_its_code_and_leaves_nothing(
    api: httpx.AsyncClient, platform: Platform, tmp_path: Path
) -> None:
    layers = [layer_tar([Entry("../../escape", b"x")])]
    write_layout(tmp_path / "bad", layers, image_config(layers, arch=host_arch()))
    done = await _import(api, "bad", tmp_path / "bad")
    assert done["status"] == "failure" and done["error_code"] == "unsafe_image", done
    assert "path_escape" in done["error_message"]
    assert_error(await api.get("/1.0/images/bad"), 404, "not_found")
    store = _store(platform)
    assert not store.exists() or [p for p in store.rglob("*") if p.name != "sha256"] == []
    assert not (tmp_path.parent / "escape").exists()


async def test_a_foreign_image_is_refused_with_the_reason(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    layers = _layers()
    write_layout(tmp_path / "arm", layers, image_config(layers, RUN, arch="riscv64"))
    done = await _import(api, "arm", tmp_path / "arm")
    assert done["status"] == "failure" and done["error_code"] == "invalid_input"
    assert "riscv64" in done["error_message"] and host_arch() in done["error_message"]


async def test_path_or_from_but_not_both(api: httpx.AsyncClient, tmp_path: Path) -> None:
    both = {"name": "x", "path": str(tmp_path), "from_ref": "docker://debian"}
    assert_error(await api.post("/1.0/images/import-oci", json=both), 400, "invalid_input")
    assert_error(await api.post("/1.0/images/import-oci", json={"name": "x"}), 400, "invalid_input")
    bad = {"name": "x", "from_ref": "http://example"}
    assert_error(await api.post("/1.0/images/import-oci", json=bad), 400, "invalid_input")


async def test_a_tarball_that_is_no_image_is_refused(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    with tarfile.open(tmp_path / "junk.tar", "w") as tar:
        tar.add(__file__, arcname="readme")
    done = await _import(api, "junk", tmp_path / "junk.tar")
    assert done["status"] == "failure" and done["error_code"] == "image_error"
    assert "neither an OCI layout" in done["error_message"]


async def test_containers_of_an_oci_image_are_checked_at_create(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """An OCI image makes containers (app by default); app mode needs an OCI image and a
    command; env and cmd are for containers only."""
    layers = _layers()
    write_layout(tmp_path / "app", layers, image_config(layers, RUN, arch=host_arch()))
    write_layout(tmp_path / "bare", layers, image_config(layers, arch=host_arch()))
    for name in ("app", "bare"):
        assert (await _import(api, name, tmp_path / name))["status"] == "success"
    ok = {"name": "c1", "kind": "container", "image": "app", "env": ["A=1"], "cmd": ["x"]}
    assert (await wait_op(api, await api.post("/1.0/instances", json=ok)))["status"] == "success"
    bare = {"name": "c2", "kind": "container", "image": "bare"}
    message = assert_error(await api.post("/1.0/instances", json=bare), 400, "invalid_input")
    assert "no entrypoint or cmd" in message
    bare["cmd"] = ["/bin/app"]
    assert (await wait_op(api, await api.post("/1.0/instances", json=bare)))["status"] == "success"
    vm = {"name": "v1", "kind": "vm", "image": "app"}
    assert "not a disk image" in assert_error(
        await api.post("/1.0/instances", json=vm), 400, "invalid_input"
    )
    vm_env = {"name": "v2", "kind": "vm", "env": ["A=1"], "cmd": ["x"]}
    message = assert_error(await api.post("/1.0/instances", json=vm_env), 400, "invalid_input")
    assert "env, cmd not valid for kind 'vm'" in message
    bad_env = {**ok, "name": "c3", "env": ["no equals"]}
    assert_error(await api.post("/1.0/instances", json=bad_env), 400, "invalid_input")


async def test_app_mode_needs_an_oci_image(api: httpx.AsyncClient, platform: Platform) -> None:
    platform.services.images.store.add_builder("container-tiny", lambda: _fake_rootfs)
    r = await api.post("/1.0/images", json={"name": "ct", "builder": "container-tiny"})
    assert (await wait_op(api, r))["status"] == "success"
    app = {"name": "c1", "kind": "container", "image": "ct", "container_mode": "app"}
    message = assert_error(await api.post("/1.0/instances", json=app), 400, "invalid_input")
    assert "no OCI image" in message
    system = {**app, "container_mode": "system"}
    assert (await wait_op(api, await api.post("/1.0/instances", json=system)))["status"] == (
        "success"
    )


def _fake_rootfs(out: Path, cache_dir: Path, progress: object) -> None:
    with tarfile.open(out, "w") as tar:
        tar.add(__file__, arcname="sbin/init")


def _fake_skopeo(bin_dir: Path, layout: Path, fail: str = "") -> None:
    """A ``skopeo`` that "copies" ``layout`` to the ``oci:DIR:latest`` it is given (or
    fails saying ``fail``), logging its arguments beside itself."""
    bin_dir.mkdir()
    script = bin_dir / "skopeo"
    body = f'echo "$@" > {bin_dir}/args\n'
    if fail:
        body += f"echo 'time=x level=fatal msg={fail}' >&2\nexit 1\n"
    else:
        body += f'dest=${{4#oci:}}; dest=${{dest%:latest}}; cp -a {layout} "$dest"\n'
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


async def test_from_a_registry_through_skopeo(
    api: httpx.AsyncClient, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from_ref`` runs ``skopeo copy docker://REF oci:WORKDIR:latest`` and imports that
    layout; its work directory is removed; skopeo's error is the operation's."""
    layers = _layers()
    write_layout(tmp_path / "layout", layers, image_config(layers, RUN, arch=host_arch()))
    _fake_skopeo(tmp_path / "bin", tmp_path / "layout")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    body = {"name": "reg", "from_ref": "docker://example.org/app:1"}
    done = await wait_op(api, await api.post("/1.0/images/import-oci", json=body))
    assert done["status"] == "success", done
    args = (tmp_path / "bin/args").read_text().split()
    assert args[:3] == ["copy", "--quiet", "docker://example.org/app:1"]
    assert args[3].startswith("oci:") and args[3].endswith("/layout:latest")
    record = (await api.get("/1.0/images/reg")).json()
    assert record["source"] == "oci:docker://example.org/app:1 (oci)"
    assert not Path(args[3].removeprefix("oci:").removesuffix(":latest")).parent.exists()
    _fake_skopeo(tmp_path / "bin2", tmp_path / "layout", fail="manifest unknown")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin2'}:{os.environ['PATH']}")
    body = {"name": "reg2", "from_ref": "docker://example.org/nothing"}
    done = await wait_op(api, await api.post("/1.0/images/import-oci", json=body))
    assert done["status"] == "failure" and done["error_code"] == "process_failed"
    assert "manifest unknown" in done["error_message"]
