"""``Call``s of the metrics, alerts and report endpoints (see client/calls.py for the shape).

Kept apart from client/calls.py so the monitoring vocabulary is in one place; used by
the CLI (``top``, ``metrics``, ``alert``, ``report``) and tests through ``Client.call``.
Must not do I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtfleet.client.calls import Call, inst, many, one, raw, segment

if TYPE_CHECKING:
    from virtfleet.model.metrics import (
        Alert,
        AlertRule,
        HostMetrics,
        InstanceMetrics,
        Silence,
        UtilizationReport,
    )


def _window(range_: str, step: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"range": range_}
    if step:
        params["step"] = step
    return params


def instance_metrics(
    name: str, range_: str = "1h", step: str | None = None
) -> Call[InstanceMetrics]:
    return Call(
        "GET",
        f"{inst(name)}/metrics",
        one("model.metrics:InstanceMetrics"),
        params=_window(range_, step),
    )


def host_metrics(range_: str = "1h", step: str | None = None) -> Call[HostMetrics]:
    return Call(
        "GET", "/1.0/host/metrics", one("model.metrics:HostMetrics"), params=_window(range_, step)
    )


def latest() -> Call[dict[str, Any]]:
    """The latest collection round: ``{"host": {...}, "instances": [...]}``."""
    return Call("GET", "/1.0/metrics", raw)


def prometheus() -> Call[str]:
    return Call("GET", "/metrics", lambda body: bytes(body).decode(), binary=True)


def alerts(include_resolved: bool = False) -> Call[list[Alert]]:
    return Call("GET", "/1.0/alerts", many("model.metrics:Alert"), params={"all": include_resolved})


def alert_rules() -> Call[list[AlertRule]]:
    return Call("GET", "/1.0/alerts/rules", many("model.metrics:AlertRule"))


def put_alert_rule(rule: AlertRule) -> Call[AlertRule]:
    path = f"/1.0/alerts/rules/{segment(rule.name, 'rule name')}"
    return Call(
        "PUT",
        path,
        one("model.metrics:AlertRule"),
        json=rule.model_dump(mode="json", exclude={"builtin"}),
    )


def delete_alert_rule(name: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/1.0/alerts/rules/{segment(name, 'rule name')}", raw)


def silences() -> Call[list[Silence]]:
    return Call("GET", "/1.0/alerts/silences", many("model.metrics:Silence"))


def silence(rule: str, target: str, duration_s: float, comment: str = "") -> Call[Silence]:
    body = {"rule": rule, "target": target, "duration_s": duration_s, "comment": comment}
    return Call("POST", "/1.0/alerts/silences", one("model.metrics:Silence"), json=body)


def utilization(window: str = "1h") -> Call[UtilizationReport]:
    return Call(
        "GET",
        "/1.0/reports/utilization",
        one("model.metrics:UtilizationReport"),
        params={"window": window},
    )
