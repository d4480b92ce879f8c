"""The whole daemon (fake driver) started on the committed schema 1 and schema 3 data
directories (tests/fixtures/datadir-v1, -v3): every record comes back through the public
API from its new key, and every instance is owned by this host (schema 3)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.functional.platform import fake_build, running
from tests.functional.test_boot import FakeClock, boot_platform, client
from virtfleet.state import identity

FIXTURE = Path(__file__).parents[1] / "fixtures" / "datadir-v1" / "virtfleet.db"
FIXTURE_V3 = Path(__file__).parents[1] / "fixtures" / "datadir-v3"


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


async def test_daemon_starts_on_a_schema_3_data_dir(tmp_path: Path) -> None:
    """The schema 3 data dir (keys without a project segment) after a host reboot: every
    record is served, the agent acts on the moved records (the autostart VM starts, with
    its NIC on the moved network), and nothing is left at an old key."""
    for name in ("virtfleet.db", "host.json"):
        shutil.copyfile(FIXTURE_V3 / name, tmp_path / name)
    (tmp_path / "images").mkdir(mode=0o700)
    fake_build(tmp_path / "images" / "tiny.qcow2", tmp_path, None)  # the store's, not files
    platform, driver = boot_platform(tmp_path, "after-upgrade", clock=FakeClock())
    assert platform.services.boot is not None
    async with running(platform), client(platform) as api:
        report = await platform.services.boot.finished()
        instances = {i["name"]: i for i in (await api.get("/1.0/instances")).json()}
        served = {
            what: sorted(x.get("name") or x.get("username") for x in (await api.get(url)).json())
            for what, url in {
                "images": "/1.0/images",
                "templates": "/1.0/templates",
                "networks": "/1.0/networks",
                "schedules": "/1.0/backup-schedules",
                "rules": "/1.0/alerts/rules",
                "users": "/1.0/users",
            }.items()
        }
        lan = (await api.get("/1.0/networks/lan")).json()
        tokens = (await api.get("/1.0/tokens")).json()
        ops = (await api.get("/1.0/operations")).json()
        hosts = [h["id"] for h in (await api.get("/1.0/hosts")).json()]
        old = [kv.key for kv in await platform.store.list("/") if _old_layout(kv.key)]
    host = identity.load(tmp_path)
    assert host is not None and hosts == [host.id]
    assert sorted(instances) == ["db", "scratch", "web"]
    owners = {n: (i["owner"]["host"], i["owner"]["epoch"]) for n, i in instances.items()}
    assert owners == dict.fromkeys(instances, (host.id, 1))
    assert [(e.name, e.outcome) for e in report.entries] == [("web", "started")]
    assert [name for call, name in driver.calls if call == "start"] == ["web"]
    web = instances["web"]
    assert web["status"]["power"] == "running" and web["spec"]["nics"][0]["network"] == "lan"
    assert served["images"] == ["gold", "tiny"] and served["templates"] == ["gold"]
    assert served["networks"] == ["lan"] and served["schedules"] == ["nightly"]
    # schema 5: the nat network is this host's, and its agent reported it made it
    assert (lan["scope"], lan["host"], lan["host_name"]) == ("host", host.id, host.name)
    assert [(h["host"], h["ok"]) for h in lan["hosts"]] == [(host.id, True)]
    assert "cpu-high" in served["rules"] and served["users"] == ["admin", "ops"]
    assert len(tokens) == 1 and len(ops) >= 5
    assert old == []


def _old_layout(key: str) -> bool:
    return key.split("/")[1] in ("instances", "images", "networks", "backup-schedules")
