"""Alert rules, their evaluation, silences, and the firing/resolved transitions.

Owns: the built-in rule set (``DEFAULT_RULES``, on by default) merged with rules kept
in the store under ``/alerts/rules/`` (same name: the stored one wins, so a default is
tuned or disabled by putting it), evaluating threshold rules against every collection
round (a sink of the metrics collector), event rules against the event log, silences
(``/alerts/silences/``), and turning each firing/resolved transition into an event
(``alert.firing`` / ``alert.resolved``) and a notification (service/notify.py).
Alert state itself is in memory: after a restart conditions are re-detected.
Must not sample anything or know HTTP.

The event log is shared by every daemon on the store, so event rules are a
cluster-wide singleton: with a ``Leadership`` only the elected leader evaluates them,
from the event after the last one a leader acted on (``/alerts/cursor``), and each
of its transitions commits fenced by its lead (state/leader.py) together with the
cursor: an event fires its webhook once however many daemons run. Threshold rules
judge this host's own samples and run on every daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from virtfleet.errors import ConflictError, InvalidInputError, NotFoundError
from virtfleet.model.event import Event
from virtfleet.model.metrics import (
    Alert,
    AlertRule,
    HostSample,
    InstanceSample,
    Silence,
    metric_names,
)
from virtfleet.service.notify import WebhookNotifier
from virtfleet.state.follow import follow
from virtfleet.state.keys import ALERT_CURSOR, ALERT_RULES, ALERT_SILENCES, EVENTS
from virtfleet.state.leader import Leadership
from virtfleet.state.repos import EventLog, ModelRepo
from virtfleet.state.store import Put, StateStore

log = logging.getLogger(__name__)
RESOLVED_KEPT = 200
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

DEFAULT_RULES = (
    AlertRule(
        name="host-memory-low",
        target="host",
        metric="memory_available_pct",
        op="<",
        threshold=10.0,
        for_s=60.0,
        severity="critical",
        summary="host memory available below 10 %",
    ),
    AlertRule(
        name="host-memory-pressure",
        target="host",
        metric="pressure_memory_some_avg10",
        op=">",
        threshold=10.0,
        for_s=120.0,
        summary="tasks stalled on memory more than 10 % of the time (PSI)",
    ),
    AlertRule(
        name="kvm-unavailable",
        target="host",
        metric="kvm_usable",
        op="<",
        threshold=1.0,
        for_s=0.0,
        severity="info",
        summary="KVM is not usable: VMs run under TCG binary translation (slow)",
    ),
    AlertRule(
        name="instance-cpu-capped",
        metric="cpu_throttled_pct",
        op=">",
        threshold=50.0,
        for_s=300.0,
        summary="instance pinned at its CPU cap (over half the CFS periods throttled)",
    ),
    AlertRule(
        name="instance-crashed",
        kind="event",
        event="instance.crashed",
        resolve_event="instance.started",
        for_s=3600.0,
        severity="critical",
        summary="instance crashed",
    ),
    AlertRule(
        name="instance-restart-failed",
        kind="event",
        event="instance.restart_failed",
        resolve_event="instance.started",
        for_s=3600.0,
        severity="critical",
        summary="the restart policy could not restart the instance",
    ),
    AlertRule(
        name="backup-failed",
        kind="event",
        event="backup.failed",
        resolve_event="backup.created",  # the next good backup of that VM resolves it
        for_s=86400.0,
        summary="a backup failed",
    ),
)
_DEFAULTS = {rule.name: rule.model_copy(update={"builtin": True}) for rule in DEFAULT_RULES}


class AlertService:
    def __init__(
        self,
        store: StateStore,
        events: EventLog,
        notifier: WebhookNotifier | None = None,
        clock: Callable[[], float] = time.time,
        leader: Leadership | None = None,
    ) -> None:
        self.events = events
        self._store = store
        self._leader = leader  # None: the only daemon on its store
        self._handled = 0  # revision of the event being (or last) evaluated
        self.notifier = notifier or WebhookNotifier()
        self.clock = clock
        self._rules_repo = ModelRepo(store, ALERT_RULES, AlertRule)
        self._silences_repo = ModelRepo(store, ALERT_SILENCES, Silence)
        self._rules: dict[str, AlertRule] = dict(_DEFAULTS)
        self._silences: list[Silence] = []
        self._active: dict[tuple[str, str], Alert] = {}
        self._resolved: deque[Alert] = deque(maxlen=RESOLVED_KEPT)
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load stored rules and silences and follow the event log for event rules."""
        stored = [r for r in await self._rules_repo.values() if isinstance(r, AlertRule)]
        self._rules = {**_DEFAULTS, **{r.name: r for r in stored}}
        self._silences = [s for s in await self._silences_repo.values() if isinstance(s, Silence)]
        revision = await self.events.store.revision()
        if self._leader is not None:
            lead = self._lead(self._leader, revision)
            self._task = asyncio.create_task(lead, name="alert-events")
            return
        self._task = asyncio.create_task(self._follow_events(revision), name="alert-events")

    async def _lead(self, leader: Leadership, started: int) -> None:
        """Evaluate event rules while this daemon leads; forget them when it stops.
        ``started``: where to begin if no leader acted on any event yet."""
        while True:
            await leader.wait_elected()
            follow = asyncio.create_task(
                self._follow_from_cursor(started), name="alert-events-lead"
            )
            try:
                await leader.wait_deposed()
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
                for key in [k for k in self._active if self._is_event_rule(k[0])]:
                    del self._active[key]  # the next leader owns them now

    async def _follow_from_cursor(self, started: int) -> None:
        kv = await self._store.get(ALERT_CURSOR)
        after = int(kv.value) if kv is not None else started
        await self._follow_events(after)  # events pruned past the cursor: the rest replayed

    def _is_event_rule(self, name: str) -> bool:
        rule = self._rules.get(name)
        return rule is not None and rule.kind == "event"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.notifier.drain()

    # -- rules and silences --------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        return sorted(self._rules.values(), key=lambda r: r.name)

    async def put_rule(self, rule: AlertRule) -> AlertRule:
        """Create or replace a rule (a built-in one is overridden, not edited in place)."""
        if rule.kind == "threshold" and not rule.metric:
            raise InvalidInputError(f"threshold rule {rule.name!r} needs a metric")
        if rule.kind == "event" and not rule.event:
            raise InvalidInputError(f"event rule {rule.name!r} needs an event kind")
        if rule.target != "host" and not rule.target.startswith("instance/"):
            raise InvalidInputError(
                f"target must be 'host' or 'instance/<glob>', not {rule.target!r}"
            )
        if rule.kind == "threshold":
            _check_metric(rule)
        rule = rule.model_copy(update={"builtin": False})
        await self._rules_repo.put(rule.name, rule)
        self._rules[rule.name] = rule
        await self._drop_state(rule.name)
        return rule

    async def delete_rule(self, name: str) -> AlertRule | None:
        """Remove a stored rule; a built-in one comes back with its defaults. Idempotent."""
        await self._rules_repo.delete(name)
        await self._drop_state(name)
        default = _DEFAULTS.get(name)
        if default is None:
            self._rules.pop(name, None)
        else:
            self._rules[name] = default
        return default

    async def silence(self, silence: Silence) -> Silence:
        if silence.rule not in self._rules:
            raise NotFoundError(f"no alert rule {silence.rule!r}")
        silence = silence.model_copy(update={"until": self.clock() + silence.duration_s})
        await self._silences_repo.put(f"{silence.rule}:{silence.target}", silence)
        self._silences = [
            s for s in self._silences if (s.rule, s.target) != (silence.rule, silence.target)
        ]
        self._silences.append(silence)
        return silence

    def silences(self) -> list[Silence]:
        now = self.clock()
        return [s for s in self._silences if (s.until or 0) > now]

    def _silenced_until(self, rule: str, target: str) -> float | None:
        ends = [
            s.until or 0
            for s in self.silences()
            if s.rule == rule and fnmatch.fnmatchcase(target, s.target)
        ]
        return max(ends) if ends else None

    # -- what users see ------------------------------------------------------------------

    def alerts(self, include_resolved: bool = False) -> list[Alert]:
        current = [
            a.model_copy(update={"silenced_until": self._silenced_until(a.rule, a.target)})
            for a in self._active.values()
        ]
        older = list(self._resolved) if include_resolved else []
        return sorted(current, key=lambda a: (a.rule, a.target)) + older[::-1]

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts() if a.state == "firing"]

    # -- threshold rules: a sink of the metrics collector --------------------------------

    async def evaluate(self, host: HostSample, samples: list[InstanceSample]) -> None:
        now = self.clock()
        values: dict[str, Mapping[str, float | None]] = {"host": host.history_values()}
        values.update({f"instance/{s.name}": s.history_values() for s in samples})
        for rule in self._rules.values():
            if rule.kind == "threshold":
                await self._threshold(rule, values, now)
        await self._expire_events(now)

    async def _threshold(
        self, rule: AlertRule, values: Mapping[str, Mapping[str, float | None]], now: float
    ) -> None:
        holding: dict[str, float] = {}
        if rule.enabled and rule.metric:
            for target, metrics in values.items():
                value = metrics.get(rule.metric)
                matches = fnmatch.fnmatchcase(target, rule.target) and value is not None
                if matches and value is not None and _OPS[rule.op](value, rule.threshold):
                    holding[target] = value
        for key in list(self._active):
            if key[0] == rule.name and key[1] not in holding:
                await self._resolve(key, now, "condition cleared")
        for target, value in holding.items():
            await self._hold(rule, target, value, now)

    async def _hold(self, rule: AlertRule, target: str, value: float, now: float) -> None:
        key = (rule.name, target)
        alert = self._active.get(key)
        if alert is None:
            message = f"{rule.summary or rule.name}: {rule.metric} {rule.op} {rule.threshold:g}"
            alert = Alert(
                rule=rule.name,
                target=target,
                state="pending",
                severity=rule.severity,
                since=now,
                message=message,
            )
            self._active[key] = alert
        alert.value = round(value, 3)
        if alert.state == "pending" and now - alert.since >= rule.for_s:
            alert.state, alert.since = "firing", now
            await self._transition(alert)

    async def _resolve(self, key: tuple[str, str], now: float, why: str) -> None:
        alert = self._active.pop(key)
        if alert.state != "firing":
            return  # a pending condition that went away never fired
        alert.state, alert.resolved_at = "resolved", now
        alert.message = f"{alert.message} ({why})"
        self._resolved.append(alert)
        await self._transition(alert)

    async def _drop_state(self, rule: str) -> None:
        """A rule changed or went: its firing alerts resolve, pending ones are forgotten."""
        for key in [k for k in self._active if k[0] == rule]:
            await self._resolve(key, self.clock(), "rule changed")

    async def _transition(self, alert: Alert) -> None:
        """A firing/resolved change: an event always, a notification unless silenced."""
        data: dict[str, Any] = alert.model_dump(mode="json")
        event = Event(
            kind=f"alert.{alert.state}", target=alert.target, message=alert.message, data=data
        )
        if self._leader is not None and self._is_event_rule(alert.rule):
            if not await self._commit_as_leader(self._leader, event):
                return  # no longer the leader: the next one acts on it
        else:
            await self.events.append(event)
        until = self._silenced_until(alert.rule, alert.target)
        if until is None:
            self.notifier.notify(data)

    async def _commit_as_leader(self, leader: Leadership, event: Event) -> bool:
        """Append ``event`` and move the cursor in one commit, only while still leading."""
        try:
            fence = leader.fence()
        except ConflictError:
            return False
        cursor = Put(ALERT_CURSOR, str(self._handled).encode())
        return bool(await self._store.txn([fence], [await self.events.entry(event), cursor]))

    # -- event rules ---------------------------------------------------------------------

    async def _follow_events(self, revision: int) -> None:
        """Event rules on each new event; a gap (compaction, store outage) is replayed."""
        async for change in follow(self.events.store, EVENTS, revision, "alerts"):
            if change.type != "put" or not change.value or not change.key.startswith(EVENTS):
                continue
            self._handled = change.revision
            try:
                await self.on_event(Event.model_validate_json(change.value))
            except Exception:
                log.exception("alert rules on an event failed")

    async def on_event(self, event: Event) -> None:
        if event.kind.startswith("alert."):
            return  # our own transitions never trigger rules
        now = self.clock()
        for rule in [r for r in self._rules.values() if r.kind == "event" and r.enabled]:
            key = (rule.name, event.target)
            if rule.resolve_event and fnmatch.fnmatchcase(event.kind, rule.resolve_event):
                if key in self._active:
                    await self._resolve(key, now, event.kind)
            elif rule.event and fnmatch.fnmatchcase(event.kind, rule.event):
                await self._fire_event(rule, event, now)

    async def _fire_event(self, rule: AlertRule, event: Event, now: float) -> None:
        key = (rule.name, event.target)
        if key in self._active:
            return  # already firing: one alert per rule and target
        alert = Alert(
            rule=rule.name,
            target=event.target,
            state="firing",
            severity=rule.severity,
            since=now,
            message=f"{rule.summary or rule.name}: {event.message}",
        )
        self._active[key] = alert
        await self._transition(alert)

    async def _expire_events(self, now: float) -> None:
        """Event alerts resolve by themselves ``for_s`` after firing (0: never)."""
        for key, alert in list(self._active.items()):
            rule = self._rules.get(key[0])
            if rule is None:
                continue
            if rule.kind == "event" and rule.for_s and now - alert.since >= rule.for_s:
                await self._resolve(key, now, f"expired after {rule.for_s:g} s")


def _check_metric(rule: AlertRule) -> None:
    """A threshold rule names a metric its targets have, or it could never fire."""
    host = rule.target == "host"
    known = metric_names(host)
    metric = rule.metric or ""
    if metric not in known and not (host and metric.startswith("pressure_")):
        names = ", ".join(sorted(known))
        raise InvalidInputError(f"unknown metric {metric!r} for {rule.target}: one of {names}")
