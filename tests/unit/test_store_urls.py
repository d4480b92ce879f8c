"""The daemon's ``--store`` setting: sqlite, memory or etcd URLs, parsed in one place
(``app.stores``); a bad one is a one-line ``invalid_store_url`` error before anything is
made, and the composition root builds the store the setting names."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.functional.platform import FACTS
from virtfleet.app.bootstrap import build_platform
from virtfleet.app.settings import Settings
from virtfleet.app.stores import EtcdFiles, StoreUrl, check_store, parse_store
from virtfleet.cli.main import app
from virtfleet.errors import InvalidStoreUrlError
from virtfleet.state.etcd import EtcdStore, grpc_target
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore


def test_store_settings_parse() -> None:
    """Kinds, endpoints in order without repeats, the scheme deciding TLS, IPv6 hosts."""
    assert parse_store("sqlite") == StoreUrl("sqlite")
    assert parse_store(" memory ") == StoreUrl("memory")
    many = parse_store(
        "etcd+http://10.0.0.1:2379, etcd+http://10.0.0.2:2379/,etcd+http://10.0.0.1:2379"
    )
    assert many == StoreUrl("etcd", ("http://10.0.0.1:2379", "http://10.0.0.2:2379"), tls=False)
    assert parse_store("etcd+http://etcd.example:2379").endpoints == ("http://etcd.example:2379",)
    secure = parse_store("etcd+https://[fd00::1]:2379,etcd+https://[fd00::2]:2379")
    assert secure == StoreUrl("etcd", ("https://[fd00::1]:2379", "https://[fd00::2]:2379"), True)
    assert grpc_target(secure.endpoints) == "ipv6:[fd00::1]:2379,[fd00::2]:2379"
    assert grpc_target(("https://[fd00::1]:2379",)) == "[fd00::1]:2379"
    assert many.describe() == "etcd at http://10.0.0.1:2379, http://10.0.0.2:2379"


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("", "empty store setting"),
        ("postgres", "is not known"),
        ("http://h:2379", "is not known"),  # the etcd+ prefix says which protocol
        ("sqlite,etcd+http://h:2379", "is not known"),
        ("etcd+http://h", "needs a host and a port"),
        ("etcd+http://:2379", "needs a host and a port"),
        ("etcd+http://h:99999", "is not valid"),
        ("etcd+http://h:2379/prefix", "only a host and a port"),
        ("etcd+http://u:p@h:2379", "only a host and a port"),
        ("etcd+http://h:1,etcd+https://h:2", "mix etcd\\+http and etcd\\+https"),
        ("etcd+http://h1:2379,etcd+http://h2:2379", "IP addresses of one family"),
        ("etcd+http://10.0.0.1:2379,etcd+http://[fd00::1]:2379", "IP addresses of one family"),
    ],
)
def test_bad_store_settings(setting: str, why: str) -> None:
    with pytest.raises(InvalidStoreUrlError, match=why) as err:
        parse_store(setting)
    assert (err.value.code, err.value.status) == ("invalid_store_url", 400)
    assert "\n" not in err.value.message


def test_etcd_tls_files(tmp_path: Path) -> None:
    """TLS files only with etcd+https, certificate and key together, each readable."""
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    assert check_store("etcd+https://h:2379", EtcdFiles(ca=ca)).tls
    assert check_store("etcd+https://h:2379").tls  # the system's CAs
    cases = [
        ("etcd+http://h:2379", EtcdFiles(ca=ca), "need etcd\\+https"),
        ("sqlite", EtcdFiles(ca=ca), "need etcd\\+https"),
        ("etcd+https://h:2379", EtcdFiles(ca=ca, cert=ca), "go together"),
        ("etcd+https://h:2379", EtcdFiles(ca=tmp_path / "missing.pem"), "missing.pem"),
    ]
    for setting, files, why in cases:
        with pytest.raises(InvalidStoreUrlError, match=why):
            check_store(setting, files)


def test_settings_take_the_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTFLEET_STORE", "etcd+http://h:2379")
    monkeypatch.setenv("VIRTFLEET_ETCD_CA", "/etc/etcd/ca.pem")
    settings = Settings()
    assert (settings.store, settings.etcd_ca) == ("etcd+http://h:2379", Path("/etc/etcd/ca.pem"))
    monkeypatch.delenv("VIRTFLEET_STORE")
    assert Settings().store == "sqlite"


@pytest.mark.parametrize(
    ("setting", "kind"),
    [("memory", MemoryStore), ("sqlite", SQLiteStore), ("etcd+http://127.0.0.1:1", EtcdStore)],
)
async def test_the_composition_root_builds_the_named_store(
    tmp_path: Path, setting: str, kind: type
) -> None:
    """An etcd store is built without connecting: the daemon starts while etcd is down."""
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "c", store=setting, driver="fake")
    platform = build_platform(settings, facts=FACTS)
    try:
        assert isinstance(platform.store, kind)
    finally:
        await platform.store.close()


def test_serve_refuses_a_bad_store_before_making_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(
        app, ["--data-dir", str(data_dir), "serve", "--driver", "fake", "--store", "etcd://h:1"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line]
    assert lines == ["error: store 'etcd://h:1' is not known: use sqlite, memory, or "
                     "etcd+http(s)://HOST:PORT URLs [invalid_store_url]"]  # fmt: skip
    assert not data_dir.exists()
    repeated = runner.invoke(
        app,
        ["--data-dir", str(data_dir), "serve", "--driver", "fake",
         "--store", "etcd+http://h:1", "--store", "etcd+https://h:2"],
    )  # fmt: skip
    assert repeated.exit_code == 2 and "mix etcd+http and etcd+https" in repeated.output
    assert not data_dir.exists()
