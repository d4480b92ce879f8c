"""The whole daemon (fake driver) started on the committed schema 1 data directory
(tests/fixtures/datadir-v1): every record comes back through the public API, and every
instance is owned by this host (schema 3)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.functional.platform import running
from tests.functional.test_boot import boot_platform, client
from virtfleet.state import identity

FIXTURE = Path(__file__).parents[1] / "fixtures" / "datadir-v1" / "virtfleet.db"


async def test_daemon_starts_on_a_schema_1_data_dir(tmp_path: Path) -> None:
    """Instances (specs, desired state), the image, the user, operations and events of the
    old store are all served after the migration; nothing is started (no boot record in
    a schema 1 store: not a new boot)."""
    shutil.copyfile(FIXTURE, tmp_path / "virtfleet.db")
    platform, driver = boot_platform(tmp_path, "any-boot")
    async with running(platform), client(platform) as api:
        instances = {i["name"]: i for i in (await api.get("/1.0/instances")).json()}
        images = [i["name"] for i in (await api.get("/1.0/images")).json()]
        users = [u["username"] for u in (await api.get("/1.0/users")).json()]
        ops = (await api.get("/1.0/operations")).json()
        events = (await api.get("/1.0/events")).json()
        report = (await api.get("/1.0/host/boot-report")).json()
    assert sorted(instances) == ["db", "scratch", "web"]
    web = instances["web"]
    assert (web["spec"]["vcpus"], web["spec"]["memory_mib"], web["spec"]["autostart"]) == (
        2,
        512,
        True,
    )
    assert web["desired"]["power"] == "running" and instances["db"]["desired"]["power"] == "stopped"
    assert [i["spec"]["restart_policy"] for i in instances.values()] == [
        "on-failure",
        "no",
        "always",
    ]
    assert images == ["tiny"] and users == ["admin"]
    assert len(ops) == 6 and all(o["status"] == "success" for o in ops)
    assert any(e["kind"] == "instance.started" for e in events)
    assert report["new_boot"] is False and report["boot_id"] == "any-boot"
    assert not [c for c in driver.calls if c[0] == "start"]
    # Schema 3: the old store's instances belong to this data directory's host, epoch 1.
    host = identity.load(tmp_path)
    assert host is not None
    owners = {n: (i["owner"]["host"], i["owner"]["epoch"]) for n, i in instances.items()}
    assert owners == dict.fromkeys(instances, (host.id, 1))
