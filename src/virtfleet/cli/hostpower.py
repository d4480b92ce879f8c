"""Start-at-boot and host-shutdown commands and flags.

Owns ``host boot-report``, ``host shutdown-guests`` and the policy flags ``vm
create``/``vm set``/``container create`` share (``--autostart``, ``--start-order``,
``--start-delay``, ``--host-shutdown``), turned into the API's field names. Must
not decide what is valid: the API does.
"""

from __future__ import annotations

import subprocess
from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client
from virtfleet.client import calls

AutostartOpt = Annotated[
    bool | None,
    typer.Option(
        "--autostart/--no-autostart", help="Start when the host boots.", show_default=False
    ),
]
StartOrderOpt = Annotated[
    int | None,
    typer.Option("--start-order", help="Boot start group, lowest first [0].", show_default=False),
]
StartDelayOpt = Annotated[
    float | None,
    typer.Option(
        "--start-delay", help="Seconds to wait after its group started [0].", show_default=False
    ),
]
HostShutdownOpt = Annotated[
    str | None,
    typer.Option(
        "--host-shutdown", help="At host shutdown: stop or suspend [stop].", show_default=False
    ),
]


def policy_fields(
    autostart: bool | None,
    start_order: int | None,
    start_delay: float | None,
    host_shutdown: str | None = None,
) -> dict[str, Any]:
    """The boot/shutdown policy fields given on the command line, as API fields."""
    fields = {
        "autostart": autostart,
        "start_order": start_order,
        "start_delay_s": start_delay,
        "host_shutdown": host_shutdown,
    }
    return {k: v for k, v in fields.items() if v is not None}


def install(host_app: typer.Typer) -> None:
    command(host_app, "boot-report")(boot_report)
    command(host_app, "shutdown-guests")(shutdown_guests)


def boot_report(json_out: JsonOpt = False) -> None:
    """What the last host boot started, in which order, and how long each took."""
    report = get_client().call(calls.boot_report())
    if json_out:
        output.print_json(report)
        return
    output.fields(
        [
            ("boot id", report.boot_id),
            ("new boot", "yes" if report.new_boot else "no (daemon restart or first start)"),
            ("detected", report.detected_at.isoformat(timespec="seconds")),
            (
                "finished",
                report.finished_at.isoformat(timespec="seconds") if report.finished_at else "-",
            ),
            ("left stopped", ", ".join(report.left_stopped) or "-"),
        ]
    )
    rows = [
        [
            e.order,
            e.name,
            e.kind,
            e.action,
            e.outcome,
            f"+{e.at_s:g}s",
            f"{e.took_s:g}s",
            e.error or "",
        ]
        for e in report.entries
    ]
    if rows:
        output.table(["ORDER", "NAME", "KIND", "ACTION", "OUTCOME", "AT", "TOOK", "ERROR"], rows)


def shutdown_guests(
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds per guest before it is forced off.")
    ] = 60.0,
    only_at_system_shutdown: Annotated[
        bool,
        typer.Option(
            "--only-at-system-shutdown",
            help="Do nothing unless systemd is taking the system down (the unit's ExecStop).",
        ),
    ] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop every running guest in the reverse of the boot order (ACPI or guest agent,
    forced after --timeout). The service unit runs this only when the system goes down."""
    if only_at_system_shutdown and not system_stopping():
        if json_out:
            output.print_json({"skipped": "the system is not shutting down"})
        output.done("the system is not shutting down: guests left running", json_out)
        return
    client = get_client()
    op = client.call(calls.shutdown_guests(timeout))
    final = output.run_operation(client, op, "stopping guests", as_json=json_out, no_wait=no_wait)
    if final is not None and not json_out:
        rows = [
            [g["order"], g["name"], g["outcome"], f"{g['took_s']:g}s", g.get("error") or ""]
            for g in final.result.get("guests", [])
        ]
        output.table(["ORDER", "NAME", "OUTCOME", "TOOK", "ERROR"], rows)


SHUTDOWN_TARGETS = ("shutdown.target", "reboot.target", "poweroff.target", "halt.target")


def system_stopping() -> bool:
    """True while systemd has a shutdown, reboot, poweroff or halt queued (a plain
    ``systemctl restart virtfleet`` has none); False without systemctl."""
    try:
        jobs = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(word in SHUTDOWN_TARGETS for line in jobs.splitlines() for word in line.split())
