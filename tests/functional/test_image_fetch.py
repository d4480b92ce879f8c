"""Image files between cluster members: two daemons on one real etcd (fake driver), each
with its own images directory. An instance created for a host that lacks its image's file
makes that host fetch it from a member that has it (signed like a forwarded request,
streamed, checked by sha256), with the byte progress in the create's operation; bytes
that do not match are refused with nothing left and the instance not created; no
reachable holder is a clear error; deleting the image removes every member's copy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.functional.cluster import pair
from tests.functional.helpers import wait_op
from tests.functional.platform import serve_uds
from virtfleet.app.bootstrap import Platform
from virtfleet.cli.main import app


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _progress(api: httpx.AsyncClient, op_id: str) -> list[str]:
    """The progress messages the event log holds for operation ``op_id``."""
    events = (await api.get("/1.0/events", params={"limit": 1000})).json()
    return [
        e["message"]
        for e in events
        if e["kind"] == "operation.progress" and e["data"].get("operation") == op_id
    ]


def _leftovers(images: Path) -> list[str]:
    return sorted(p.name for p in images.iterdir() if p.name.startswith("tiny"))


async def _create(api: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    body = {"name": name, "image": "tiny", **body}
    return await wait_op(api, await api.post("/1.0/instances", json=body))


async def test_a_host_lacking_the_image_fetches_it_and_delete_removes_every_copy(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (a, b):
        image = (await a.api.get("/1.0/images/tiny")).json()
        done = await _create(a.api, "placed", host="host-b", start=True)
        progress = await _progress(a.api, done["id"])
        on_b = (await b.api.get("/1.0/instances/placed")).json()
        copy = tmp_path / "host-b" / "images" / "tiny.qcow2"
        fetched_sha = _sha256(copy)
        again = await _create(a.api, "second", host="host-b")  # B holds it now: no fetch
        again_progress = await _progress(a.api, again["id"])
        for name in ("web", "placed", "second"):
            r = await a.api.delete(f"/1.0/instances/{name}", params={"force": "true"})
            assert (await wait_op(a.api, r))["status"] == "success"
        deleted = await b.api.delete("/1.0/images/tiny")  # through the member that fetched
        left_a = _leftovers(tmp_path / "host-a" / "images")
        left_b = _leftovers(tmp_path / "host-b" / "images")
    assert done["status"] == "success", done
    assert on_b["status"]["power"] == "running" and on_b["owner"]["host"] == b.host_id
    assert fetched_sha == image["sha256"]
    size = copy.stat().st_size if copy.exists() else None
    assert size is None  # gone with the image
    assert any(m.startswith("fetching image tiny from host-a: ") and m.endswith(" MiB")
               for m in progress), progress  # fmt: skip
    assert not any("fetching" in m for m in again_progress)
    assert deleted.json() == {"name": "tiny", "deleted": True, "kept_on": []}
    assert left_a == [] and left_b == []


async def test_wrong_bytes_are_refused_and_no_holder_is_a_clear_error(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        original = tmp_path / "host-a" / "images" / "tiny.qcow2"
        good = original.read_bytes()
        original.write_bytes(good[:-4096] + b"\xff" * 4096)  # same length, other bytes
        corrupt = await _create(a.api, "bad", host="host-b", start=True)
        gone = await a.api.get("/1.0/instances/bad")
        left_corrupt = sorted(p.name for p in (tmp_path / "host-b" / "images").iterdir())
        original.write_bytes(good[: len(good) // 2])  # truncated
        fetch = await wait_op(
            a.api, await a.api.post("/1.0/images/tiny/fetch", json={"host": "host-b"})
        )
        left_truncated = sorted(p.name for p in (tmp_path / "host-b" / "images").iterdir())
        direct = await a.api.get("/1.0/images/tiny/file")  # not a member: refused
        original.write_bytes(good)
        await a.stop_listener()  # the only holder does not answer
        unreachable = await _create(b.api, "lonely", host="host-b")
        none_b = await b.api.get("/1.0/instances/lonely")
    assert corrupt["status"] == "failure"
    assert corrupt["error_code"] == "image_transfer_failed"
    assert corrupt["error_message"].startswith("image 'tiny' arrived corrupt: sha256 ")
    assert "\n" not in corrupt["error_message"]
    assert gone.status_code == 404
    assert left_corrupt == []
    assert fetch["kind"] == "image.fetch" and fetch["host"] == b.host_id
    assert (fetch["status"], fetch["error_code"]) == ("failure", "image_transfer_failed")
    assert fetch["error_message"] == (
        f"image 'tiny' arrived truncated: {len(good) // 2} of {len(good)} bytes"
    )
    assert left_truncated == []
    assert direct.status_code == 403
    assert (unreachable["status"], unreachable["error_code"]) == ("failure", "image_unavailable")
    assert unreachable["error_message"].startswith(
        "no online member holds image 'tiny''s file: host host-a ("
    )
    assert none_b.status_code == 404


def test_cli_image_fetch(tmp_path: Path) -> None:
    """``image fetch``: an image this host holds is there at once; an unknown member is the
    one-line ``unknown_host`` error, with --json too."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        cli = ["--data-dir", str(data_dir)]
        runner.invoke(app, [*cli, "image", "build", "tiny"])
        here = runner.invoke(app, [*cli, "image", "fetch", "tiny", "--json"])
        plain = runner.invoke(app, [*cli, "image", "fetch", "tiny"])
        lost = runner.invoke(app, [*cli, "image", "fetch", "tiny", "--host", "nowhere", "--json"])
    assert here.exit_code == 0, here.output
    done = json.loads(here.output)
    assert (done["kind"], done["status"], done["result"]["image"]) == (
        "image.fetch",
        "success",
        "tiny",
    )
    assert "image tiny is on this host" in plain.output
    assert lost.exit_code != 0
    assert json.loads(lost.output)["error"]["code"] == "unknown_host"


async def test_an_image_made_before_copies_were_recorded_is_claimed(
    platform: Platform, image: str
) -> None:
    """A file this host made before hosts recorded their copies (no location record) is
    claimed at start, so members can fetch it; one of that name but other content is not."""
    images = platform.services.images.store
    await images.files.forget(image)  # as an older release left it
    before = await images.files.locations(image)
    claimed = await platform.services.images.claim_local()
    after = await images.files.locations(image)
    await images.files.forget(image)
    path = images.file_for(image)
    path.write_bytes(path.read_bytes())  # same name, rewritten: not the file that was hashed
    stranger = await platform.services.images.claim_local()
    record = await images.get(image)
    assert before == [] and claimed == 1 and stranger == 0
    assert [(x.host, x.sha256, x.path) for x in after] == [
        (images.files.host_id, record.sha256, str(path))
    ]
