"""``virtfleet token|user|whoami|audit`` against a daemon on its local socket (root)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.functional.platform import serve_uds
from virtfleet.cli.durations import parse_duration_s, parse_time
from virtfleet.cli.main import app
from virtfleet.client import ApiError, Client, api_socket

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    with serve_uds(tmp_path) as d:
        yield d


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args], input=stdin)


def test_whoami_on_the_local_socket(data_dir: Path) -> None:
    assert cli(data_dir, "whoami").stdout.strip() == "root@local (admin) via local"
    assert json.loads(cli(data_dir, "whoami", "--json").stdout)["role"] == "admin"


def test_token_create_list_revoke(data_dir: Path) -> None:
    """create prints the token once; list shows it without the secret; revoke ends it."""
    made = cli(data_dir, "token", "create", "--role", "operator", "--expires", "30d")
    token = made.stdout.strip()
    assert made.exit_code == 0 and token.startswith("vf_") and "not shown again" in made.stderr
    [listed] = json.loads(cli(data_dir, "token", "list", "--json").stdout)
    assert listed["role"] == "operator" and listed["owner"] == "root@local"
    assert token not in cli(data_dir, "token", "list").stdout
    expires = datetime.fromisoformat(listed["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    sock = api_socket(data_dir)
    with Client(uds_path=sock, token=token) as client:
        assert client.whoami().role.value == "operator"
    assert cli(data_dir, "token", "revoke", listed["id"]).stdout.strip().endswith("revoked")
    with Client(uds_path=sock, token=token) as client, pytest.raises(ApiError) as err:
        client.whoami()
    assert err.value.code == "unauthenticated" and "revoked" in err.value.message
    assert "active" not in cli(data_dir, "token", "list").stdout


def test_token_lifetime_defaults_to_90_days_and_never_is_explicit(data_dir: Path) -> None:
    """Without --expires a token lives 90 days; ``--expires never`` makes one without end."""
    made = json.loads(cli(data_dir, "token", "create", "--json").stdout)
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    endless = json.loads(cli(data_dir, "token", "create", "--expires", "never", "--json").stdout)
    assert endless["expires_at"] is None


def test_token_create_rejects_bad_input(data_dir: Path) -> None:
    bad = cli(data_dir, "token", "create", "--role", "god")
    assert bad.exit_code == 2 and "[invalid_input]" in bad.stderr
    bad = cli(data_dir, "token", "create", "--expires", "soon", "--json")
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error"]["code"] == "invalid_input"


def test_user_commands(data_dir: Path) -> None:
    """create (password from stdin), list, passwd, delete; the user can then log in."""
    made = cli(
        data_dir,
        "user",
        "create",
        "bob",
        "--role",
        "operator",
        "--password-stdin",
        stdin="bob's password\n",
    )
    assert made.exit_code == 0, made.output
    users = json.loads(cli(data_dir, "user", "list", "--json").stdout)
    assert {"admin", "bob"} == {u["username"] for u in users}
    changed = cli(data_dir, "user", "passwd", "bob", "--password-stdin", stdin="a new one!\n")
    assert changed.exit_code == 0 and "changed" in changed.stdout
    with Client(uds_path=api_socket(data_dir), http=_remote(data_dir)) as bob:
        assert bob.login("bob", "a new one!").role.value == "operator"
        assert bob.create_token("viewer").token.startswith("vf_")  # a change: CSRF header sent
        assert bob.logout()["logged_out"] is True
    assert "deleted" in cli(data_dir, "user", "delete", "bob").stdout
    again = cli(data_dir, "user", "delete", "bob", "--json")
    assert json.loads(again.stdout) == {"username": "bob", "deleted": False}
    short = cli(data_dir, "user", "create", "eve", "--password-stdin", stdin="short\n")
    assert short.exit_code == 2 and "[invalid_input]" in short.stderr


def test_user_set_changes_role_and_disables(data_dir: Path) -> None:
    """``user set``: a new role, then --disable (login refused) and --enable again."""
    made = cli(data_dir, "user", "create", "carl", "--password-stdin", stdin="carl's password\n")
    assert made.exit_code == 0, made.output
    set_role = json.loads(
        cli(data_dir, "user", "set", "carl", "--role", "operator", "--json").stdout
    )
    assert set_role["role"] == "operator" and set_role["disabled"] is False
    assert "carl: operator, disabled" in cli(data_dir, "user", "set", "carl", "--disable").stdout
    assert "disabled" in cli(data_dir, "user", "list").stdout
    with Client(uds_path=api_socket(data_dir), http=_remote(data_dir)) as carl:
        with pytest.raises(ApiError) as err:
            carl.login("carl", "carl's password")
        assert err.value.code == "unauthenticated" and "disabled" in err.value.message
    assert "active" in cli(data_dir, "user", "set", "carl", "--enable").stdout
    with Client(uds_path=api_socket(data_dir), http=_remote(data_dir)) as carl:
        assert carl.login("carl", "carl's password").role.value == "operator"
    nothing = cli(data_dir, "user", "set", "carl")
    assert nothing.exit_code == 2 and "[invalid_input]" in nothing.stderr


def test_a_login_on_the_clients_own_socket_keeps_its_session(data_dir: Path) -> None:
    """Calls go straight to the socket's transport while no cookie is held; the session
    cookie a login sets is kept, and later calls send it (and the CSRF header)."""
    made = cli(data_dir, "user", "create", "carol", "--password-stdin", stdin="carol's secret\n")
    assert made.exit_code == 0, made.output
    with Client(uds_path=api_socket(data_dir)) as carol:
        assert carol.whoami().username == "root@local"  # no cookie: the local peer
        assert carol.login("carol", "carol's secret").role.value == "viewer"
        assert carol.whoami().username == "carol"  # the session cookie went along
        assert carol.logout()["logged_out"] is True


def _remote(data_dir: Path) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(api_socket(data_dir)))
    return httpx.Client(transport=transport, base_url="http://virtfleet")


def test_audit_command(data_dir: Path) -> None:
    """Changes show in ``audit`` with filters; bad times are invalid input."""
    cli(data_dir, "token", "create")
    cli(data_dir, "image", "delete", "nothing")
    rows = json.loads(cli(data_dir, "audit", "--json", "--since", "1h").stdout)
    assert [(e["method"], e["path"]) for e in rows] == [
        ("DELETE", "/1.0/images/nothing"),
        ("POST", "/1.0/tokens"),
    ]
    assert "root@local" in cli(data_dir, "audit", "--method", "POST").stdout
    only = json.loads(cli(data_dir, "audit", "--json", "--path", "/1.0/images").stdout)
    assert len(only) == 1
    bad = cli(data_dir, "audit", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "invalid time" in bad.stderr


def test_durations() -> None:
    assert parse_duration_s("90") == 90 and parse_duration_s("15m") == 900
    assert parse_duration_s("30d") == 30 * 86400 and parse_duration_s("2W") == 14 * 86400
    for bad in ("", "0s", "-1h", "1y", "soon"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration_s(bad)
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time("1h", now) == datetime(2026, 1, 31, 11, tzinfo=UTC)
    assert parse_time("2026-01-30T10:00") == datetime(2026, 1, 30, 10, tzinfo=UTC)
