"""Routes of metrics, alerts and the utilization report, and the Prometheus ``/metrics``.

``/1.0/instances/{name}/metrics`` and ``/1.0/host/metrics`` (latest sample + history),
``/1.0/metrics`` (the latest round, for ``top``), ``/1.0/alerts...`` (rules, alerts,
silences), ``/1.0/reports/utilization``. ``/metrics`` needs a token or session like
the API, unless the daemon allows scrapes from loopback without one. Handlers only
call ``MetricsService``/``AlertService``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from virtfleet.api.auth import ADMIN, ANY_USER, OPERATOR, principal_of, require
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.prometheus import CONTENT_TYPE, exposition
from virtfleet.errors import HostError, InvalidNameError
from virtfleet.model.auth import Role
from virtfleet.model.metrics import (
    Alert,
    AlertRule,
    HostMetrics,
    InstanceMetrics,
    Silence,
    UtilizationReport,
)
from virtfleet.model.names import validate_name
from virtfleet.service import Services
from virtfleet.service.alerts import AlertService
from virtfleet.service.metrics import MetricsService
from virtfleet.util.net import is_loopback

router = APIRouter(tags=["metrics"], dependencies=[ANY_USER])
scrape = APIRouter(tags=["metrics"])
RangeQ = Annotated[str, Query(alias="range", max_length=20, description="e.g. 15m, 1h, 7d")]
StepQ = Annotated[
    str | None, Query(max_length=20, description="e.g. 10s, 1m (default: ~120 points)")
]


def _metrics(services: Services) -> MetricsService:
    if services.metrics is None:
        raise HostError("metrics collection is not enabled on this daemon")
    return services.metrics


def _alerts(services: Services) -> AlertService:
    if services.alerts is None:
        raise HostError("alerts are not enabled on this daemon")
    return services.alerts


@router.get("/1.0/instances/{name}/metrics")
async def instance_metrics(
    name: InstanceName, services: ServicesDep, range_: RangeQ = "1h", step: StepQ = None
) -> InstanceMetrics:
    return await _metrics(services).instance(name, range_, step)


@router.get("/1.0/host/metrics")
async def host_metrics(
    services: ServicesDep, range_: RangeQ = "1h", step: StepQ = None
) -> HostMetrics:
    return _metrics(services).host(range_, step)


@router.get("/1.0/metrics")
async def latest(services: ServicesDep) -> dict[str, Any]:
    """The latest collection round: the host and every running instance."""
    host, instances = _metrics(services).latest()
    return {
        "host": host.model_dump(mode="json") if host else None,
        "instances": [s.model_dump(mode="json") for s in instances],
    }


@router.get("/1.0/reports/utilization")
async def utilization(
    services: ServicesDep,
    window: Annotated[str, Query(max_length=20, description="e.g. 1h, 1d, 30d")] = "1h",
) -> UtilizationReport:
    return await _metrics(services).report(window)


@router.get("/1.0/alerts")
async def list_alerts(
    services: ServicesDep, all_: Annotated[bool, Query(alias="all")] = False
) -> list[Alert]:
    """Pending and firing alerts; with ``all`` also the recently resolved ones."""
    return _alerts(services).alerts(include_resolved=all_)


@router.get("/1.0/alerts/rules")
async def list_rules(services: ServicesDep) -> list[AlertRule]:
    return _alerts(services).rules()


@router.put("/1.0/alerts/rules/{rule}", dependencies=[ADMIN])
async def put_rule(rule: str, body: AlertRule, services: ServicesDep) -> AlertRule:
    validate_name(rule, "rule name")
    if body.name != rule:
        raise InvalidNameError(f"the body names rule {body.name!r}, the path {rule!r}", name=rule)
    return await _alerts(services).put_rule(body)


@router.delete("/1.0/alerts/rules/{rule}", dependencies=[ADMIN])
async def delete_rule(rule: str, services: ServicesDep) -> dict[str, Any]:
    validate_name(rule, "rule name")
    default = await _alerts(services).delete_rule(rule)
    return {"name": rule, "restored_default": default is not None}


class WebhookStatus(BaseModel):
    configured: int  # how many URLs (not shown: they may carry credentials)
    delivered: int  # notifications a webhook accepted since the daemon started
    failed: int  # notifications given up on after every retry


@router.get("/1.0/alerts/webhooks")
async def webhook_status(services: ServicesDep) -> WebhookStatus:
    """How alert notifications reached the webhooks since the daemon started."""
    n = _alerts(services).notifier
    return WebhookStatus(configured=len(n.urls), delivered=n.delivered, failed=n.failed)


@router.get("/1.0/alerts/silences")
async def list_silences(services: ServicesDep) -> list[Silence]:
    return _alerts(services).silences()


@router.post("/1.0/alerts/silences", dependencies=[OPERATOR])
async def add_silence(body: Silence, services: ServicesDep) -> Silence:
    return await _alerts(services).silence(body)


_VIEWER = require(Role.VIEWER)


@scrape.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def prometheus(conn: HTTPConnection, services: ServicesDep) -> Response:
    """Prometheus text exposition of the latest samples (token, or loopback if allowed)."""
    metrics = _metrics(services)
    client = conn.client.host if conn.client else ""
    open_here = metrics.scrape_from_loopback and is_loopback(client)
    if principal_of(conn.scope) is None and not open_here:
        await _VIEWER(conn)  # raises the usual 401 with the reason
    host, instances = metrics.latest()
    firing = services.alerts.firing() if services.alerts is not None else []
    body = exposition(host, instances, firing, metrics.rounds())
    return Response(body, media_type=CONTENT_TYPE)
