"""The alert engine with a fake clock: pending -> firing after the duration -> resolved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from virtfleet.model.event import Event
from virtfleet.model.metrics import HostSample, InstanceSample
from virtfleet.service.alerts import AlertService
from virtfleet.service.notify import WebhookNotifier
from virtfleet.state.leader import Leadership
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EventLog
from virtfleet.state.store import WatchEvent


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(WebhookNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def notify(self, payload: dict[str, Any]) -> None:
        self.sent.append(payload)


def _host(available_pct: float) -> HostSample:
    return HostSample(time=0, memory_available_pct=available_pct, kvm_usable=True)


async def test_threshold_rule_waits_for_its_duration_then_resolves() -> None:
    """host-memory-low (< 10 % for 60 s) is pending first, fires after 60 s, resolves when
    memory comes back; a blip shorter than the duration never fires."""
    clock, notifier = Clock(), Recorder()
    events = EventLog(MemoryStore())
    alerts = AlertService(events.store, events, notifier, clock)
    await alerts.evaluate(_host(5.0), [])
    assert [(a.rule, a.state) for a in alerts.alerts()] == [("host-memory-low", "pending")]
    clock.now += 30
    await alerts.evaluate(_host(50.0), [])  # a blip: cleared before 60 s
    assert alerts.alerts() == [] and notifier.sent == []
    await alerts.evaluate(_host(5.0), [])
    clock.now += 61
    await alerts.evaluate(_host(4.0), [])
    [firing] = alerts.firing()
    assert (firing.rule, firing.target, firing.value) == ("host-memory-low", "host", 4.0)
    clock.now += 10
    await alerts.evaluate(_host(40.0), [])
    assert [(p["rule"], p["state"]) for p in notifier.sent] == [
        ("host-memory-low", "firing"),
        ("host-memory-low", "resolved"),
    ]
    kinds = [e.kind for e in await events.recent()]
    assert kinds == ["alert.firing", "alert.resolved"]


async def test_instance_rule_per_target_and_disabled_rule() -> None:
    """An instance rule tracks each instance apart; a disabled override never fires."""
    clock, notifier = Clock(), Recorder()
    events = EventLog(MemoryStore())
    alerts = AlertService(events.store, events, notifier, clock)
    capped = [
        InstanceSample(name=n, time=0, cpu_throttled_pct=t) for n, t in (("a", 90.0), ("b", 1.0))
    ]
    await alerts.evaluate(_host(50.0), capped)
    clock.now += 301
    await alerts.evaluate(_host(50.0), capped)
    assert [(a.rule, a.target) for a in alerts.firing()] == [("instance-cpu-capped", "instance/a")]
    rule = next(r for r in alerts.rules() if r.name == "instance-cpu-capped")
    await alerts.put_rule(rule.model_copy(update={"enabled": False}))
    assert alerts.firing() == [] and notifier.sent[-1]["state"] == "resolved"
    clock.now += 400
    await alerts.evaluate(_host(50.0), capped)
    assert alerts.alerts() == []


async def test_two_daemons_fire_each_event_alert_once() -> None:
    """Two daemons on one store, each following the event log: a backup failure fires
    its alert (and webhook) once, on the leader; after the leader resigns the other daemon
    takes over from where it stopped, and the next failure fires once, there."""
    store = MemoryStore()
    events = EventLog(store)
    leaders = [Leadership(store, "alerts", f"host{i}") for i in range(2)]
    notifiers = [Recorder(), Recorder()]
    daemons = [
        AlertService(store, EventLog(store), notifiers[i], Clock(), leaders[i]) for i in range(2)
    ]
    leaders[0].start()
    await leaders[0].wait_elected()
    leaders[1].start()
    for daemon in daemons:
        await daemon.start()
    watch = events.watch(await store.revision())
    await events.append(Event(kind="backup.failed", target="instance/a", message="disk full"))
    assert await next_alert(watch) == ("alert.firing", "instance/a")
    await leaders[0].stop()
    await asyncio.wait_for(leaders[1].wait_elected(), 5)
    await events.append(Event(kind="backup.failed", target="instance/b", message="disk full"))
    assert await next_alert(watch) == ("alert.firing", "instance/b")
    sent = [[p["target"] for p in n.sent] for n in notifiers]
    assert sent == [["instance/a"], ["instance/b"]]
    for daemon in daemons:
        await daemon.stop()
    await leaders[1].stop()
    await store.close()


async def next_alert(watch: AsyncIterator[WatchEvent]) -> tuple[str, str]:
    """The next ``alert.*`` event's kind and target (within 5 s)."""

    async def find() -> tuple[str, str]:
        async for change in watch:
            event = Event.model_validate_json(change.value or b"{}")
            if event.kind.startswith("alert."):
                return event.kind, event.target
        raise AssertionError("the store closed")

    return await asyncio.wait_for(find(), 5)
