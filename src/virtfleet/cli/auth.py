"""``virtfleet token ...``, ``user ...``, ``whoami`` and ``audit``: access control from the CLI.

Owns arguments -> client calls -> tables/JSON for API tokens, users, the
caller's identity and the audit log. Passwords are read from a hidden prompt
or, with ``--password-stdin``, one per line from stdin; never from an option
(it would show in ``ps`` and shell history). Must not check credentials itself.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client, invalid
from virtfleet.cli.durations import parse_duration_s, parse_time
from virtfleet.model.audit import AuditEntry
from virtfleet.model.auth import TokenInfo

token_app = typer.Typer(help="API tokens for automation.", no_args_is_help=True)
user_app = typer.Typer(
    help="Local users (admins only, but `passwd` for oneself).", no_args_is_help=True
)
RoleOpt = Annotated[
    str, typer.Option("--role", help="admin, operator or viewer.", show_default=True)
]
UserArg = Annotated[str, typer.Argument(help="Username.", show_default=False)]
StdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password(s) from stdin, one per line."),
]
ROLES = ("admin", "operator", "viewer")


def _role(role: str) -> str:
    if role not in ROLES:
        raise invalid(f"invalid role {role!r}: use admin, operator or viewer")
    return role


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else ""


def _state(t: TokenInfo) -> str:
    if t.revoked_at:
        return "revoked"
    if t.expires_at and t.expires_at <= datetime.now(t.expires_at.tzinfo):
        return "expired"
    return "active"


@command(token_app, "create")
def token_create(
    role: RoleOpt = "viewer",
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="Lifetime, e.g. 12h, 30d, or 'never' (default: 90 days).",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Create a token (at most your own role) and print it: it is shown this once."""
    never = expires is not None and expires.strip().lower() == "never"
    try:
        expires_in_s = parse_duration_s(expires) if expires and not never else None
    except ValueError as err:
        raise invalid(str(err)) from None
    new = get_client().create_token(_role(role), expires_in_s, description, never)
    if json_out:
        output.print_json(new)
        return
    print(new.token)
    until = f", expires {_when(new.expires_at)} UTC" if new.expires_at else ""
    print(f"token {new.id} ({new.role}{until}); it is not shown again", file=sys.stderr)


@command(token_app, "list")
def token_list(json_out: JsonOpt = False) -> None:
    """List your tokens (an admin: everyone's); secrets are never shown."""
    tokens = get_client().list_tokens()
    if json_out:
        output.print_json(tokens)
        return
    output.table(
        ["ID", "OWNER", "ROLE", "STATE", "CREATED", "EXPIRES", "DESCRIPTION"],
        [_token_row(t) for t in tokens],
    )


def _token_row(t: TokenInfo) -> list[Any]:
    created, expires = _when(t.created_at), _when(t.expires_at)
    return [t.id, t.owner, t.role.value, _state(t), created, expires, t.description]


@command(token_app, "revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Revoke a token at once (revoking again changes nothing)."""
    info = get_client().revoke_token(token_id)
    if json_out:
        output.print_json(info)
    output.done(f"token {info.id} revoked", json_out)


@command(user_app, "list")
def user_list(json_out: JsonOpt = False) -> None:
    """List users."""
    users = get_client().list_users()
    if json_out:
        output.print_json(users)
        return
    output.table(
        ["USERNAME", "ROLE", "CREATED", "STATE"],
        [
            [u.username, u.role.value, _when(u.created_at), "disabled" if u.disabled else "active"]
            for u in users
        ],
    )


@command(user_app, "create")
def user_create(
    username: UserArg,
    role: RoleOpt = "viewer",
    password_stdin: StdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a user; the password is prompted for (or read from stdin)."""
    password = _read_password("Password", password_stdin, confirm=True)
    info = get_client().create_user(username, password, _role(role))
    if json_out:
        output.print_json(info)
    output.done(f"user {info.username} created ({info.role.value})", json_out)


@command(user_app, "delete")
def user_delete(username: UserArg, json_out: JsonOpt = False) -> None:
    """Delete a user, ending its sessions and revoking its tokens."""
    deleted = get_client().delete_user(username)
    if json_out:
        output.print_json({"username": username, "deleted": deleted})
        return
    output.done(f"user {username} deleted" if deleted else f"user {username} did not exist", False)


@command(user_app, "set")
def user_set(
    username: UserArg,
    role: Annotated[str | None, typer.Option("--role", help="admin, operator or viewer.")] = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="A disabled user cannot log in or use tokens."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a user's role, or disable/enable it."""
    if role is None and enabled is None:
        raise invalid("give --role, --enable or --disable")
    disabled = None if enabled is None else not enabled
    info = get_client().update_user(username, _role(role) if role else None, disabled)
    if json_out:
        output.print_json(info)
    state = "disabled" if info.disabled else "active"
    output.done(f"user {info.username}: {info.role.value}, {state}", json_out)


@command(user_app, "passwd")
def user_passwd(
    username: UserArg, password_stdin: StdinOpt = False, json_out: JsonOpt = False
) -> None:
    """Change a password. Non-admins change their own and give the current one first
    (with --password-stdin: the current password on the first line, the new one next)."""
    client = get_client()
    current = None
    if client.whoami().role.value != "admin":
        current = _read_password("Current password", password_stdin, confirm=False)
    new = _read_password("New password", password_stdin, confirm=True)
    info = client.change_password(username, new, current)
    if json_out:
        output.print_json(info)
    output.done(f"password of {info.username} changed", json_out)


def _read_password(prompt: str, from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise invalid(f"{prompt.lower()}: nothing on stdin")
        return line.rstrip("\r\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def whoami(json_out: JsonOpt = False) -> None:
    """Show who the daemon takes you for (the local socket: root@local, admin)."""
    me = get_client().whoami()
    if json_out:
        output.print_json(me)
        return
    until = f" until {_when(me.expires_at)} UTC" if me.expires_at else ""
    token = f" {me.token_id}" if me.token_id else ""
    output.stdout().print(f"{me.username} ({me.role.value}) via {me.via}{token}{until}")


def audit(
    actor: Annotated[str | None, typer.Option("--actor", help="Only this user.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="Only POST, PUT...")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only paths starting so.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="1h, 2d or ISO time.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="1h, 2d or ISO time.")] = None,
    status: Annotated[int | None, typer.Option("--status", help="Only this HTTP status.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Show the audit log of changes, newest first (admins only)."""
    try:
        times = {k: parse_time(v) for k, v in (("since", since), ("until", until)) if v}
    except ValueError as err:
        raise invalid(str(err)) from None
    filters: dict[str, Any] = {"actor": actor, "method": method, "path": path, "status": status}
    entries = get_client().list_audit(**filters, **times, limit=limit)
    if json_out:
        output.print_json(entries)
        return
    output.table(
        ["TIME", "ACTOR", "SOURCE", "METHOD", "PATH", "STATUS"], [_row(e) for e in entries]
    )


def _row(e: AuditEntry) -> list[Any]:
    return [e.time.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.source, e.method, e.path, e.status]
