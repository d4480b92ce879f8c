"""Use cases of the platform, bundled for the API: instances, images, operations, host, events,
users/sessions (auth), API tokens and the audit log.

Owns the ``Services`` bundle the composition root (app/bootstrap.py) builds and
the API consumes. Must not know HTTP or QEMU: services write desired state and
submit operations; the host agent does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtfleet.service.audit import AuditService
from virtfleet.service.auth import AuthService
from virtfleet.service.backups import BackupService
from virtfleet.service.console import ConsoleAccess, ConsoleTickets, NoConsole
from virtfleet.service.events import EventService
from virtfleet.service.host import HostService
from virtfleet.service.idempotency import IdempotencyService
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner
from virtfleet.service.schedules import ScheduleService
from virtfleet.service.snapshots import SnapshotService
from virtfleet.service.tokens import TokenService

__all__ = [
    "AuditService",
    "AuthService",
    "ConsoleAccess",
    "ConsoleTickets",
    "EventService",
    "HostService",
    "IdempotencyService",
    "ImageService",
    "InstanceService",
    "OperationRunner",
    "Services",
    "TokenService",
]


@dataclass
class Services:
    instances: InstanceService
    images: ImageService
    operations: OperationRunner
    host: HostService
    events: EventService
    auth: AuthService
    tokens: TokenService
    audit: AuditService
    console: ConsoleAccess = field(default_factory=NoConsole)
    console_tickets: ConsoleTickets = field(default_factory=ConsoleTickets)
    idempotency: IdempotencyService | None = None  # None: Idempotency-Key is ignored
    snapshots: SnapshotService | None = None  # None: the driver has no disks to snapshot
    backups: BackupService | None = None
    schedules: ScheduleService | None = None
