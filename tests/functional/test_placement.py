"""Where a new instance goes in a cluster: ``host`` names its owner (an unknown one is 400
``unknown_host`` and nothing is made); without it, the least-allocated online host."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.functional.cluster import pair
from tests.functional.helpers import assert_error, create
from tests.functional.platform import serve_uds
from virtfleet.cli.main import app
from virtfleet.state import identity


async def test_placement_picks_the_less_allocated_host_and_honours_host(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):  # A runs web (256 MiB); B runs nothing
        await create(a.api, "placed")  # through A, no host named
        await create(b.api, "pinned", host="host-a")  # through B, by name
        await create(a.api, "by-id", host=b.host_id)  # through A, by id
        unknown = await a.api.post(
            "/1.0/instances", json={"name": "lost", "image": "tiny", "host": "host-z"}
        )
        lost = await a.api.get("/1.0/instances/lost")
        owners = {
            name: (await b.api.get(f"/1.0/instances/{name}")).json()["owner"]["host"]
            for name in ("web", "placed", "pinned", "by-id")
        }
    assert owners == {"web": a.host_id, "placed": b.host_id, "pinned": a.host_id,
                      "by-id": b.host_id}  # fmt: skip
    assert assert_error(unknown, 400, "unknown_host") == (
        "unknown host 'host-z'; the members are: host-a, host-b"
    )
    assert lost.status_code == 404


def test_cli_create_with_host(tmp_path: Path) -> None:
    """``vm create --host`` / ``container create --host``: this host by name is fine, an
    unknown one is the one-line ``unknown_host`` error, with --json too."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        me = identity.load_or_create(data_dir)
        cli = ["--data-dir", str(data_dir)]
        runner.invoke(app, [*cli, "image", "build", "tiny"])
        made = runner.invoke(app, [*cli, "vm", "create", "one", "--image", "tiny",
                                   "--host", me.name, "--json"])  # fmt: skip
        vm = runner.invoke(app, [*cli, "vm", "create", "two", "--image", "tiny",
                                 "--host", "nowhere", "--json"])  # fmt: skip
        box = runner.invoke(app, [*cli, "container", "create", "three", "--host", "nowhere"])
        listed = runner.invoke(app, [*cli, "list", "--json"])
    assert made.exit_code == 0, made.output
    assert vm.exit_code != 0 and box.exit_code != 0
    assert json.loads(vm.output)["error"]["code"] == "unknown_host"
    assert f"unknown host 'nowhere'; the members are: {me.name}" in box.output
    assert [i["name"] for i in json.loads(listed.output)] == ["one"]
