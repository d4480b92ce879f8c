"""Metrics, Prometheus exposition, alerts with webhooks and the utilization report,
through the public API of the in-process daemon (real collector, history, alert engine
and webhook delivery; the fake driver's synthetic disk counters)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role

from .accounts import Accounts
from .helpers import act, assert_error, create


async def _rounds(platform: Platform, count: int = 2) -> None:
    """Run collection rounds now (the daemon's own loop runs every 10 s)."""
    for _ in range(count):
        await asyncio.sleep(0.05)  # rates need time between rounds
        await platform.host.collector.collect_once()


async def test_instance_and_host_metrics(
    api: httpx.AsyncClient, platform: Platform, image: str
) -> None:
    """A running instance has a latest sample (disk counters from the driver, CPU rate)
    and a history; the host too."""
    await create(api, "m1", start=True)
    await _rounds(platform, 3)
    body = (await api.get("/1.0/instances/m1/metrics", params={"range": "15m"})).json()
    latest = body["latest"]
    assert latest["name"] == "m1" and latest["disks"]["root"]["write_bytes_total"] > 0
    assert latest["disks"]["root"]["write_bps"] > 0
    assert "net" in latest["unavailable"]  # what is not measured says so
    history = body["history"]
    assert history["tier_step_s"] == 10 and history["range_s"] == 900
    assert history["points"]["disk_write_bps"][-1][1] > 0
    host = (await api.get("/1.0/host/metrics", params={"range": "1h", "step": "1m"})).json()
    assert host["latest"]["memory_total_bytes"] > 0 and host["latest"]["cpu_pct"] is not None
    assert host["history"]["step_s"] == 60 and host["history"]["points"]["memory_used_bytes"]
    top = (await api.get("/1.0/metrics")).json()
    assert [s["name"] for s in top["instances"]] == ["m1"] and top["host"]["cpus"] >= 1


async def test_metrics_bad_input(api: httpx.AsyncClient, image: str) -> None:
    """Unknown instance: 404; a bad range or step: one-line 400."""
    assert_error(await api.get("/1.0/instances/nope/metrics"), 404, "not_found")
    await create(api, "m2")
    for params in (
        {"range": "soon"},
        {"range": "90d"},
        {"step": "0s"},
        {"range": "30d", "step": "1s"},
    ):
        assert_error(
            await api.get("/1.0/instances/m2/metrics", params=params), 400, "invalid_input"
        )
    assert_error(
        await api.get("/1.0/reports/utilization", params={"window": "x"}), 400, "invalid_input"
    )


async def test_prometheus_exposition_passes_promtool(
    api: httpx.AsyncClient, platform: Platform, accounts: Accounts, image: str
) -> None:
    """/metrics needs credentials (a viewer token works) and passes `promtool check metrics`."""
    await create(api, "p1", start=True)
    await _rounds(platform)
    assert_error(await accounts.anonymous().get("/metrics"), 401, "unauthenticated")
    viewer = await accounts.token(Role.VIEWER)
    r = await viewer.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'virtfleet_instance_disk_written_bytes_total{device="root",name="p1"}' in text
    assert "virtfleet_host_memory_total_bytes" in text
    check = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_prometheus_from_loopback_when_allowed(
    platform: Platform, accounts: Accounts
) -> None:
    """With scrapes from loopback allowed, an anonymous loopback client gets /metrics,
    a remote one still needs a token."""
    assert platform.services.metrics is not None
    platform.services.metrics.scrape_from_loopback = True
    await _rounds(platform, 1)
    assert (await accounts.anonymous("127.0.0.1").get("/metrics")).status_code == 200
    assert_error(await accounts.anonymous("192.0.2.9").get("/metrics"), 401, "unauthenticated")


class _Receiver:
    """A webhook receiver on loopback that records JSON bodies; fails the first N posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                else:
                    outer.bodies.append(json.loads(data))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def states(self, rule: str) -> list[str]:
        return [b["state"] for b in self.bodies if b["rule"] == rule]


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    rec = _Receiver(fail_first=1)
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


async def _until(cond: Any, what: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_alert_fires_and_resolves_with_webhook(
    api: httpx.AsyncClient, platform: Platform, receiver: _Receiver, image: str
) -> None:
    """A threshold rule fires after its duration and resolves when the condition clears;
    both transitions are events and reach the webhook (the first POST fails: retried)."""
    alerts = platform.services.alerts
    assert alerts is not None
    alerts.notifier.urls, alerts.notifier.backoff_s = [receiver.url], 0.05
    rule = {"name": "disk-busy", "metric": "disk_write_bps", "op": ">", "threshold": 0, "for_s": 0}
    r = await api.put("/1.0/alerts/rules/disk-busy", json=rule)
    assert r.status_code == 200, r.text
    await create(api, "a1", start=True)
    await _rounds(platform)
    firing = (await api.get("/1.0/alerts")).json()
    assert [(a["rule"], a["target"], a["state"]) for a in firing if a["rule"] == "disk-busy"] == [
        ("disk-busy", "instance/a1", "firing")
    ]
    await _until(lambda: receiver.states("disk-busy") == ["firing"], "firing webhook")
    # The receiver sees the POST before the notifier has read its answer and counted it.
    await _until(lambda: alerts.notifier.delivered == 1, "the delivery counted")
    hooks = (await api.get("/1.0/alerts/webhooks")).json()
    assert hooks == {"configured": 1, "delivered": 1, "failed": 0}  # after a retried attempt
    await act(api, "a1", "stop", force=True)
    await _rounds(platform, 1)
    await _until(lambda: receiver.states("disk-busy") == ["firing", "resolved"], "resolved webhook")
    kinds = [
        e["kind"] for e in (await api.get("/1.0/events")).json() if e["kind"].startswith("alert.")
    ]
    assert "alert.firing" in kinds and "alert.resolved" in kinds
    history = (await api.get("/1.0/alerts", params={"all": True})).json()
    assert any(a["rule"] == "disk-busy" and a["state"] == "resolved" for a in history)


async def test_silence_and_event_rule(
    api: httpx.AsyncClient, platform: Platform, driver: Any, receiver: _Receiver, image: str
) -> None:
    """The built-in crash rule fires on a crash event and resolves on the next start;
    a silenced rule still records events but sends no webhook."""
    alerts = platform.services.alerts
    assert alerts is not None
    receiver.fail_left = 0
    alerts.notifier.urls = [receiver.url]
    rules = {r["name"] for r in (await api.get("/1.0/alerts/rules")).json()}
    assert {"instance-crashed", "host-memory-low", "kvm-unavailable", "backup-failed"} <= rules
    await create(api, "c1", start=True)
    driver.crash("c1")
    await _until(lambda: receiver.states("instance-crashed") == ["firing"], "crash alert")
    await act(api, "c1", "start")
    await _until(lambda: receiver.states("instance-crashed") == ["firing", "resolved"], "resolve")
    silence = {"rule": "instance-crashed", "target": "instance/*", "duration_s": 600}
    r = await api.post("/1.0/alerts/silences", json=silence)
    assert r.status_code == 200 and r.json()["until"] > 0
    driver.crash("c1")
    await _until(
        lambda: any(a.rule == "instance-crashed" for a in alerts.firing()), "silenced alert firing"
    )
    await asyncio.sleep(0.3)
    assert receiver.states("instance-crashed") == ["firing", "resolved"]  # nothing new sent
    shown = [a for a in (await api.get("/1.0/alerts")).json() if a["rule"] == "instance-crashed"]
    assert shown[0]["silenced_until"] is not None
    assert_error(await api.post("/1.0/alerts/silences", json={"rule": "nope"}), 404, "not_found")
    bad = {"name": "x", "kind": "threshold", "target": "vm/*"}
    assert_error(await api.put("/1.0/alerts/rules/x", json=bad), 400, "invalid_input")


async def test_utilization_report(api: httpx.AsyncClient, platform: Platform, image: str) -> None:
    """The report counts allocation of running instances against the host and names idle ones."""
    await create(api, "r1", start=True, vcpus=2, memory_mib=512)
    await create(api, "r2", start=True)
    await _rounds(platform, 3)
    report = (await api.get("/1.0/reports/utilization", params={"window": "15m"})).json()
    assert report["allocated_vcpus"] == 3 and report["allocated_memory_mib"] == 768
    assert report["cpu_consolidation_ratio"] == pytest.approx(3 / 4)  # FACTS: 4 cpus
    names = {u["name"]: u for u in report["instances"]}
    assert set(names) == {"r1", "r2"}
    assert names["r1"]["vcpus"] == 2 and names["r1"]["samples"] >= 1
