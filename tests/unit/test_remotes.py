"""Remotes: the remotes file, choosing a remote, and ``virtfleet remote ...`` / ``--remote``.

CLI scenarios run against the in-process platform served over HTTPS on a
loopback port (``tls_server``); the remotes file lives in a temporary
``VIRTFLEET_CONFIG_DIR``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.unit.test_cli_console import serial_sink
from tests.unit.tls_server import TlsServer, new_certificate, serve_tls
from virtfleet.cli.console import attach
from virtfleet.cli.main import app
from virtfleet.client import ApiError, remotes
from virtfleet.client.remotes import Remote, RemoteConfig

runner = CliRunner()


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config"
    monkeypatch.setenv(remotes.CONFIG_DIR_ENV, str(path))
    monkeypatch.delenv(remotes.REMOTE_ENV, raising=False)
    monkeypatch.delenv("VIRTFLEET_DATA_DIR", raising=False)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    with serve_tls(tmp_path / "daemon") as s:
        yield s


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def add(server: TlsServer, name: str = "lab", *extra: str) -> Result:
    return cli("remote", "add", name, server.url, "--token", server.token, *extra)


def test_remotes_file_round_trip_is_private(config_dir: Path) -> None:
    """What is saved loads back; the file is 0600 in a 0700 directory (it holds tokens)."""
    config = RemoteConfig(default="lab")
    config.remotes["lab"] = Remote(url="https://10.0.0.5:8006", token="t", fingerprint="AB")
    remotes.save(config)
    path = config_dir / "remotes.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert remotes.load() == config
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["remotes"]["lab"]["url"] == "https://10.0.0.5:8006"


def test_missing_file_is_empty_and_corrupt_file_is_an_error(config_dir: Path) -> None:
    assert remotes.load() == RemoteConfig()
    config_dir.mkdir()
    (config_dir / "remotes.json").write_text("{not json")
    with pytest.raises(ApiError) as info:
        remotes.load()
    assert info.value.code == "invalid_config" and "remotes.json" in info.value.message


def test_which_remote_a_command_uses() -> None:
    """--remote wins; then an explicit --data-dir means local; then the default."""
    config = RemoteConfig(default="a", remotes={"a": Remote(url="https://a"), "b": Remote(url="x")})
    assert remotes.selected("b", True, config) == "b"
    assert remotes.selected(None, True, config) is None
    assert remotes.selected(None, False, config) == "a"
    assert remotes.selected("local", False, config) is None
    assert remotes.selected(None, False, RemoteConfig()) is None
    with pytest.raises(ApiError) as info:
        remotes.selected("nope", False, config)
    assert info.value.code == "not_found"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://10.0.0.5", ("https", "10.0.0.5", 8006)),
        ("https://host.example:9000/", ("https", "host.example", 9000)),
        ("https://[fd00::1]:8443", ("https", "fd00::1", 8443)),
        ("http://127.0.0.1:8006", ("http", "127.0.0.1", 8006)),
    ],
)
def test_remote_urls(url: str, expected: tuple[str, str, int]) -> None:
    assert remotes.parse_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8006", "ftp://x", "https://", "https://h/api", "https://h:99999"]
)
def test_bad_remote_urls(url: str) -> None:
    """Plain http beyond loopback would send the token in the clear: refused, like junk."""
    with pytest.raises(ApiError) as info:
        remotes.parse_url(url)
    assert info.value.code == "invalid_input"


def test_add_with_the_right_fingerprint_then_use_it(server: TlsServer, config_dir: Path) -> None:
    """remote add pins the certificate; --remote runs commands there with the token."""
    result = add(server, "lab", "--accept-fingerprint", server.fingerprint.replace(":", ""))
    assert result.exit_code == 0, result.output
    saved = remotes.load().remotes["lab"]
    assert saved.fingerprint == server.fingerprint and saved.token == server.token
    listed = cli("--remote", "lab", "vm", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    assert server.authorizations()[-1] == f"Bearer {server.token}"


def test_add_asks_before_trusting(server: TlsServer) -> None:
    """Without --yes the fingerprint is shown and a 'no' adds nothing; 'yes' adds."""
    refused = runner.invoke(app, ["remote", "add", "lab", server.url, "--token", "t"], input="n\n")
    assert refused.exit_code == 1 and server.fingerprint in refused.stderr
    assert "[cancelled]" in refused.stderr and remotes.load().remotes == {}
    assert add(server, "lab", "--yes").exit_code == 0


def test_add_with_a_wrong_fingerprint_is_certificate_mismatch(
    server: TlsServer, tmp_path: Path
) -> None:
    """--accept-fingerprint that is not the server's: certificate_mismatch, nothing saved."""
    wrong = new_certificate(tmp_path / "other")[2]
    result = add(server, "lab", "--accept-fingerprint", wrong, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "certificate_mismatch"
    assert remotes.load().remotes == {} and server.headers == []


def test_changed_certificate_fails_every_command(server: TlsServer, tmp_path: Path) -> None:
    """Once pinned, a server presenting another certificate is refused (like SSH)."""
    assert add(server, "lab", "--yes").exit_code == 0
    config = remotes.load()
    config.remotes["lab"].fingerprint = new_certificate(tmp_path / "other")[2]
    remotes.save(config)
    sent = len(server.headers)
    result = cli("--remote", "lab", "vm", "list")
    assert result.exit_code == 1 and result.stderr.rstrip().endswith("[certificate_mismatch]")
    assert len(server.headers) == sent


def test_a_bad_token_is_refused_at_add(server: TlsServer) -> None:
    result = cli("remote", "add", "lab", server.url, "--token", "vf_x.y", "--yes")
    assert result.exit_code == 1 and "[unauthenticated]" in result.stderr
    assert remotes.load().remotes == {}


def test_list_default_remove(server: TlsServer, tmp_path: Path) -> None:
    """list never shows tokens; default selects a remote for commands without --remote
    (an explicit --data-dir still means local); remove clears the default."""
    assert add(server, "lab", "--yes").exit_code == 0
    rows = json.loads(cli("remote", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["local", "lab"] and server.token not in str(rows)
    assert cli("remote", "default", "lab").exit_code == 0
    assert cli("remote", "default").stdout.strip() == "lab"
    assert cli("vm", "list", "--json").exit_code == 0  # through the default remote
    local = cli("--data-dir", str(tmp_path / "nodaemon"), "vm", "list")
    assert local.exit_code == 1 and "[daemon_unavailable]" in local.stderr
    assert cli("remote", "remove", "lab").exit_code == 0
    assert remotes.load() == RemoteConfig()
    assert cli("remote", "remove", "lab").exit_code == 1


def test_reserved_and_duplicate_names(server: TlsServer) -> None:
    assert "[invalid_name]" in add(server, "local", "--yes").stderr
    assert add(server, "lab", "--yes").exit_code == 0
    assert "[already_exists]" in add(server, "lab", "--yes").stderr


def test_console_over_a_remote(
    server: TlsServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """vm console works over a remote: the websocket goes through the pin with the token."""
    assert add(server, "lab", "--yes").exit_code == 0
    for args in (
        ["image", "build", "tiny"],
        ["vm", "create", "demo", "--image", "tiny", "--start"],
    ):
        assert cli("--remote", "lab", *args).exit_code == 0
    received: list[bytes] = []
    sink = serial_sink(server.data_dir / "console" / "demo.sock", received)
    read_end, write_end = os.pipe()
    os.write(write_end, b"root\r\x1d")
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb", buffering=0))
    attach(remotes.client_for(remotes.load().remotes["lab"]), "demo")
    sink.join(5)
    os.close(write_end)
    assert b"".join(received) == b"root\r"
    assert "detached from demo" in capsys.readouterr().err
    assert server.authorizations()[-1] == f"Bearer {server.token}"
