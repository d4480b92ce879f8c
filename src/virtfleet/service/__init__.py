"""Use cases of the platform, bundled for the API: instances, images, operations, host, events,
users/sessions (auth), API tokens, the audit log and virtual networks.

Owns the ``Services`` bundle the composition root (app/bootstrap.py) builds and
the API consumes. Must not know HTTP or QEMU: services write desired state and
submit operations; the host agent does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtfleet.service.alerts import AlertService
from virtfleet.service.audit import AuditService
from virtfleet.service.auth import AuthService
from virtfleet.service.backups import BackupService
from virtfleet.service.boot import BootService
from virtfleet.service.capacity import CapacityService
from virtfleet.service.cluster import ClusterService
from virtfleet.service.console import ConsoleAccess, ConsoleTickets, NoConsole
from virtfleet.service.containers import ContainerService
from virtfleet.service.disks import DiskService
from virtfleet.service.events import EventService
from virtfleet.service.forwarding import ForwardingService
from virtfleet.service.guest import GuestService
from virtfleet.service.host import HostService
from virtfleet.service.idempotency import IdempotencyService
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.metrics import MetricsService
from virtfleet.service.networks import NetworkService
from virtfleet.service.operations import OperationRunner
from virtfleet.service.ova import OvaService
from virtfleet.service.pools import PoolService
from virtfleet.service.resources import ResourceService
from virtfleet.service.schedules import ScheduleService
from virtfleet.service.shutdown import ShutdownService
from virtfleet.service.snapshots import SnapshotService
from virtfleet.service.templates import TemplateService
from virtfleet.service.tokens import TokenService

__all__ = [
    "AlertService",
    "AuditService",
    "AuthService",
    "CapacityService",
    "ConsoleAccess",
    "ConsoleTickets",
    "ContainerService",
    "DiskService",
    "EventService",
    "GuestService",
    "HostService",
    "IdempotencyService",
    "ImageService",
    "InstanceService",
    "MetricsService",
    "NetworkService",
    "OperationRunner",
    "OvaService",
    "PoolService",
    "ResourceService",
    "Services",
    "TemplateService",
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
    metrics: MetricsService | None = None  # None: no collector wired (metrics routes: 503)
    alerts: AlertService | None = None
    containers: ContainerService | None = None  # exec, live limits, rootfs snapshots
    networks: NetworkService | None = None  # None: no virtual networks (answers 503)
    resources: ResourceService | None = None  # None: resources cannot be changed (PATCH 404s)
    capacity: CapacityService | None = None
    templates: TemplateService | None = None  # None: no templates/clones (fakes)
    guests: GuestService | None = None  # None: no guest agents
    ova: OvaService | None = None  # None: no OVA import/export
    snapshots: SnapshotService | None = None  # None: the driver has no disks to snapshot
    backups: BackupService | None = None
    schedules: ScheduleService | None = None
    disks: DiskService | None = None  # None: kept disks are not managed (answers 503)
    boot: BootService | None = None  # None: no start at boot (nothing recorded)
    shutdown: ShutdownService | None = None  # None: no host shutdown-guests (answers 503)
    cluster: ClusterService | None = None  # None: no cluster view (answers 503)
    forwarding: ForwardingService | None = None  # None: nothing is forwarded to an owner
    pools: PoolService | None = None  # None: no storage pools (answers 503)
