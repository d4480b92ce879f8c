"""``virtfleet top``, ``metrics NAME``, ``alert ...`` and ``report``: monitoring commands.

Owns arguments -> metrics/alert/report calls (client/metrics_calls.py) -> Rich tables
or JSON. ``top`` refreshes a live table until Ctrl-C (``--json`` prints one round,
``--once`` one table). Must not change anything but alert rules and silences.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client, invalid
from virtfleet.client import metrics_calls
from virtfleet.model.metrics import AlertRule, Series

alert_app = typer.Typer(help="Alert rules, firing alerts and silences.", no_args_is_help=True)


NameArg = Annotated[str, typer.Argument(help="Instance name.", show_default=False)]
MIB = 1024 * 1024


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}M"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}/s"
    return f"{value:.0f}B/s"


def _top_table(data: dict[str, Any]) -> Table:
    host = data.get("host") or {}
    title = (
        f"host {host.get('hostname', '')}  cpu {_num(host.get('cpu_pct'))}%  "
        f"load {host.get('load1', 0):.2f}  mem avail {_num(host.get('memory_available_pct'))}%  "
        f"running {host.get('instances_running', 0)}"
    )
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in (
        "NAME",
        "ACCEL",
        "VCPUS",
        "CPU%",
        "VCPU%",
        "CAP%",
        "THROT%",
        "RSS",
        "DISK R",
        "DISK W",
    ):
        table.add_column(col, justify="left" if col in ("NAME", "ACCEL") else "right")
    for s in data.get("instances", []):
        values = [
            s["name"],
            s["accel"],
            str(s["vcpus"]),
            _num(s["cpu_pct"]),
            " ".join(f"{v:.0f}" for _, v in sorted(s["vcpu_pct"].items())) or "-",
            _num(s["cpu_cap_pct"], "{:.0f}"),
            _num(s["cpu_throttled_pct"], "{:.0f}"),
            _mib(s["memory_rss_bytes"]),
            _rate(sum(d["read_bps"] or 0 for d in s["disks"].values()) if s["disks"] else None),
            _rate(sum(d["write_bps"] or 0 for d in s["disks"].values()) if s["disks"] else None),
        ]
        table.add_row(*values)
    return table


def top(
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Refresh seconds.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Live table of the host and every running instance (Ctrl-C quits)."""
    client = get_client()
    data = client.call(metrics_calls.latest())
    if json_out:
        output.print_json(data)
        return
    if once:
        output.stdout().print(_top_table(data))
        return
    try:
        with Live(_top_table(data), console=output.stdout(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(_top_table(client.call(metrics_calls.latest())), refresh=True)
    except KeyboardInterrupt:
        pass


def _spark(points: list[tuple[float, float, float]]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    values = [p[1] for p in points]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[int((v - low) / span * (len(bars) - 1))] for v in values[-60:])


def _series_rows(series: Series) -> list[list[Any]]:
    rows = []
    for metric, points in series.points.items():
        avg = sum(p[1] for p in points) / len(points)
        peak = max(p[2] for p in points)
        last = points[-1][1]
        rows.append([metric, f"{last:.4g}", f"{avg:.4g}", f"{peak:.4g}", _spark(points)])
    return rows


def metrics(
    name: NameArg,
    range_: Annotated[str, typer.Option("--range", help="How far back: 15m, 1h, 7d.")] = "1h",
    step: Annotated[str | None, typer.Option("--step", help="Resolution: 10s, 1m...")] = None,
    json_out: JsonOpt = False,
) -> None:
    """An instance's latest sample and its history (last, average, peak, sparkline)."""
    found = get_client().call(metrics_calls.instance_metrics(name, range_, step))
    if json_out:
        output.print_json(found)
        return
    series = found.history
    output.stdout().print(
        f"[bold]{name}[/bold]: {series.range_s}s at {series.step_s}s steps "
        f"(stored every {series.tier_step_s}s)"
    )
    output.table(["METRIC", "LAST", "AVG", "PEAK", "HISTORY"], _series_rows(series))
    if found.latest is not None and found.latest.unavailable:
        for what, why in sorted(found.latest.unavailable.items()):
            output.stdout().print(f"not measured: {what}: {why}")


def report(
    window: Annotated[str, typer.Option("--window", help="Window: 1h, 1d, 30d.")] = "1h",
    json_out: JsonOpt = False,
) -> None:
    """Utilization and consolidation: allocated vs used, idle/oversized VMs, bottlenecks."""
    r = get_client().call(metrics_calls.utilization(window))
    if json_out:
        output.print_json(r)
        return
    output.fields(
        [
            ("window", f"{r.window_s}s"),
            ("host", f"{r.host_cpus} cores, {r.host_memory_mib} MiB"),
            ("allocated", f"{r.allocated_vcpus} vCPUs, {r.allocated_memory_mib} MiB"),
            (
                "consolidation",
                f"{r.cpu_consolidation_ratio}:1 vCPU/core, {r.memory_consolidation_ratio}:1 memory",
            ),
            (
                "used (avg)",
                f"{r.used_cpu_avg_cores} cores "
                f"({r.cpu_utilization_of_allocation_pct}% of allocated), "
                f"{r.used_memory_avg_mib} MiB",
            ),
            ("host cpu avg", _num(r.host_cpu_avg_pct) + "%"),
            ("host memory avg", _num(r.host_memory_used_avg_pct) + "%"),
        ]
    )
    output.table(
        ["NAME", "VCPUS", "CPU AVG%", "CPU PEAK%", "OF ALLOC%", "MEM AVG", "MEM", "FINDINGS"],
        [
            [
                u.name,
                u.vcpus,
                u.cpu_avg_pct,
                u.cpu_peak_pct,
                u.cpu_of_allocation_pct,
                f"{u.memory_used_avg_mib:.0f}M",
                f"{u.memory_mib}M",
                "; ".join(u.findings),
            ]
            for u in r.instances
        ],
    )
    for hint in r.hints:
        output.stdout().print(f"hint: {hint}")


@command(alert_app, "list")
def alert_list(
    all_: Annotated[bool, typer.Option("--all", help="Also recently resolved.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Pending and firing alerts."""
    found = get_client().call(metrics_calls.alerts(all_))
    if json_out:
        output.print_json(found)
        return
    output.table(
        ["RULE", "TARGET", "STATE", "SEVERITY", "SINCE", "VALUE", "SILENCED", "MESSAGE"],
        [
            [
                a.rule,
                a.target,
                a.state,
                a.severity,
                time.strftime("%H:%M:%S", time.localtime(a.since)),
                a.value,
                "yes" if a.silenced_until else "",
                a.message,
            ]
            for a in found
        ],
    )


@command(alert_app, "rules")
def alert_rules(json_out: JsonOpt = False) -> None:
    """Every alert rule (built-in ones unless overridden)."""
    rules = get_client().call(metrics_calls.alert_rules())
    if json_out:
        output.print_json(rules)
        return
    output.table(
        ["NAME", "KIND", "TARGET", "CONDITION", "FOR", "SEVERITY", "ON", "BUILTIN"],
        [
            [
                r.name,
                r.kind,
                r.target,
                _condition(r),
                f"{r.for_s:g}s",
                r.severity,
                "yes" if r.enabled else "no",
                "yes" if r.builtin else "",
            ]
            for r in rules
        ],
    )


def _condition(rule: AlertRule) -> str:
    if rule.kind == "event":
        return f"event {rule.event}" + (
            f" until {rule.resolve_event}" if rule.resolve_event else ""
        )
    return f"{rule.metric} {rule.op} {rule.threshold:g}"


@command(alert_app, "set")
def alert_set(
    name: Annotated[str, typer.Argument(help="Rule name.", show_default=False)],
    metric: Annotated[str, typer.Option("--metric", help="e.g. cpu_pct, memory_available_pct.")],
    op: Annotated[str, typer.Option("--op", help="> >= < <=")] = ">",
    threshold: Annotated[float, typer.Option("--threshold")] = 0.0,
    for_s: Annotated[float, typer.Option("--for", help="Seconds the condition must hold.")] = 60.0,
    target: Annotated[
        str, typer.Option("--target", help="host, instance/* or instance/NAME")
    ] = "instance/*",
    severity: Annotated[
        str, typer.Option("--severity", help="info, warning, critical")
    ] = "warning",
    disable: Annotated[bool, typer.Option("--disable", help="Keep it, but off.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a threshold rule (a built-in one of that name is overridden)."""
    try:
        rule = AlertRule.model_validate(
            {
                "name": name,
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "for_s": for_s,
                "target": target,
                "severity": severity,
                "enabled": not disable,
            }
        )
    except ValueError as err:
        raise invalid(" ".join(str(err).split())[:300]) from err
    saved = get_client().call(metrics_calls.put_alert_rule(rule))
    if json_out:
        output.print_json(saved)
    output.done(f"rule {saved.name}: {_condition(saved)} for {saved.for_s:g}s", json_out)


@command(alert_app, "delete")
def alert_delete(
    name: Annotated[str, typer.Argument(help="Rule name.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Delete a rule (a built-in one returns to its defaults)."""
    result = get_client().call(metrics_calls.delete_alert_rule(name))
    if json_out:
        output.print_json(result)
    note = " (built-in defaults restored)" if result.get("restored_default") else ""
    output.done(f"rule {name} deleted{note}", json_out)


@command(alert_app, "silence")
def alert_silence(
    rule: Annotated[str, typer.Argument(help="Rule name.", show_default=False)],
    target: Annotated[str, typer.Option("--target", help="Glob: *, host, instance/web-*")] = "*",
    duration: Annotated[float, typer.Option("--for", help="Seconds.")] = 3600.0,
    comment: Annotated[str, typer.Option("--comment")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Silence a rule's notifications for a while (alerts still show and log events)."""
    made = get_client().call(metrics_calls.silence(rule, target, duration, comment))
    if json_out:
        output.print_json(made)
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(made.until or 0))
    output.done(f"{rule} on {target} silenced until {until}", json_out)
