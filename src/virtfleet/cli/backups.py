"""``virtfleet backup ...``: create, list, show, verify, prune, restore, delete; schedules.

Owns arguments -> backup calls -> tables/JSON/progress bars. Must not decide
anything the API decides (full vs incremental, retention, integrity).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, fail, get_client
from virtfleet.client import backups as calls
from virtfleet.client.calls import Call
from virtfleet.client.errors import ApiError
from virtfleet.model.backup import BackupInfo
from virtfleet.model.operation import Operation

app = typer.Typer(help="Backups into the deduplicating repository.", no_args_is_help=True)
schedule_app = typer.Typer(help="Backup schedules (cron) run by the daemon.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
IdArg = Annotated[str, typer.Argument(help="Backup id.", show_default=False)]
VmArg = Annotated[str, typer.Argument(help="VM name.", show_default=False)]
Keep = Annotated[int, typer.Option(min=0)]


def _mib(n: Any) -> str:
    return f"{int(n or 0) / 2**20:.1f} MiB"


def _op(call: Call[Operation], label: str, json_out: bool, no_wait: bool) -> Any:
    client = get_client()
    return output.run_operation(client, client.call(call), label, as_json=json_out, no_wait=no_wait)


@command(app, "create")
def create(
    vm: VmArg,
    full: Annotated[bool, typer.Option("--full", help="Read whole disks.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Back up a VM: incremental when its dirty bitmap is trusted, else full (says why)."""
    done = _op(calls.create_backup(vm, full), f"backing up {vm}", json_out, no_wait)
    if done is not None and not json_out:
        b = BackupInfo.model_validate(done.result)
        note = f" ({b.full_reason})" if b.full_reason else ""
        read, new = _mib(b.stats.get("bytes_read")), _mib(b.stats.get("bytes_written"))
        output.done(f"{b.kind} backup {b.id} of {vm}: read {read}, stored {new}{note}", False)


@command(app, "list")
def list_(
    vm: Annotated[str | None, typer.Option("--vm", help="Only this VM.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List backups, oldest first."""
    backups = get_client().call(calls.list_backups(vm))
    if json_out:
        output.print_json(backups)
        return
    rows = [
        [b.id, b.instance, b.kind, b.parent or "-", _mib(b.stats.get("bytes_read"))]
        for b in backups
    ]
    output.table(["ID", "VM", "KIND", "PARENT", "READ"], rows)


@command(app, "show")
def show(backup_id: IdArg, json_out: JsonOpt = False) -> None:
    """Show one backup."""
    b = get_client().call(calls.get_backup(backup_id))
    if json_out:
        output.print_json(b)
        return
    output.fields(
        [
            ("id", b.id),
            ("vm", b.instance),
            ("created", b.created_at),
            ("kind", b.kind),
            ("parent", b.parent),
            ("why full", b.full_reason),
            ("consistency", b.consistency),
            ("disks", ", ".join(f"{n} ({_mib(s)})" for n, s in b.disks.items())),
            ("read", _mib(b.stats.get("bytes_read"))),
            ("stored", _mib(b.stats.get("bytes_written"))),
            ("seconds", b.stats.get("seconds")),
        ]
    )


@command(app, "verify")
def verify(no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Re-read every chunk; name exactly the damaged backups (exit 1 if any)."""
    done = _op(calls.verify_backups(), "verifying the repository", json_out, no_wait)
    if done is None or not done.result:
        return
    r = done.result
    if not json_out:
        bad = r["damaged_backups"] + r["unreadable_manifests"]
        damaged = ", ".join(bad) or "none"
        print(f"{r['backups']} backups, {r['chunks']} chunks checked; damaged: {damaged}")
    if not r["ok"]:
        raise typer.Exit(1)


@command(app, "prune")
def prune(
    vm: Annotated[str | None, typer.Option("--vm", help="Only this VM's backups.")] = None,
    keep_last: Keep = 0,
    keep_daily: Keep = 0,
    keep_weekly: Keep = 0,
    keep_monthly: Keep = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete backups the policy does not keep (per VM), then unreferenced chunks."""
    if not (keep_last or keep_daily or keep_weekly or keep_monthly):
        fail(ApiError("invalid_input", "give at least one --keep-* option", 400), json_out)
    keep = {"last": keep_last, "daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    done = _op(calls.prune_backups(vm, dry_run, **keep), "pruning", json_out, no_wait)
    if done is not None and not json_out and done.result:
        r = done.result
        verb = "would remove" if dry_run else "removed"
        print(
            f"kept {len(r['kept'])}, {verb} {len(r['removed'])}: {', '.join(r['removed']) or '-'}"
        )


@command(app, "restore")
def restore(
    backup_id: IdArg,
    to: Annotated[
        str | None, typer.Option("--to", help="New VM name (default: over the original, stopped).")
    ] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the new VM.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Restore a backup to a new VM or over its (stopped) original."""
    label = f"restoring {backup_id}" + (f" to {to}" if to else "")
    if _op(calls.restore_backup(backup_id, to, start), label, json_out, no_wait):
        output.done(f"restored {backup_id}" + (f" as {to}" if to else ""), json_out)


@command(app, "delete")
def delete(backup_id: IdArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Delete one backup (the others stay complete: manifests are self-contained)."""
    if _op(calls.delete_backup(backup_id), f"deleting {backup_id}", json_out, no_wait):
        output.done(f"backup {backup_id} deleted", json_out)


@command(schedule_app, "list")
def schedule_list(json_out: JsonOpt = False) -> None:
    """List backup schedules."""
    found = get_client().call(calls.list_schedules())
    if json_out:
        output.print_json(found)
        return
    rows = [[s.name, s.instance, s.cron, s.last_run or "-", s.last_status or "-"] for s in found]
    output.table(["NAME", "VM", "CRON", "LAST RUN", "LAST STATUS"], rows)


@command(schedule_app, "set")
def schedule_set(
    name: Annotated[str, typer.Argument(help="Schedule name.")],
    vm: Annotated[str, typer.Option("--vm", help="VM to back up.")],
    cron: Annotated[str, typer.Option("--cron", help="e.g. '0 3 * * *' (daily 03:00 UTC).")],
    keep_last: Keep = 0,
    keep_daily: Keep = 0,
    keep_weekly: Keep = 0,
    keep_monthly: Keep = 0,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a schedule; after each backup its retention policy prunes."""
    keep = {"last": keep_last, "daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    s = get_client().call(calls.put_schedule(name, vm, cron, **keep))
    if json_out:
        output.print_json(s)
    else:
        output.done(f"schedule {s.name}: {s.instance} at '{s.cron}'", False)


@command(schedule_app, "delete")
def schedule_delete(name: Annotated[str, typer.Argument()], json_out: JsonOpt = False) -> None:
    """Delete a schedule."""
    result = get_client().call(calls.delete_schedule(name))
    if json_out:
        output.print_json(result)
    else:
        output.done(f"schedule {name} deleted", False)
