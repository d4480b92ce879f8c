"""Use cases of the platform, bundled for the API: instances, images, operations, host, events.

Owns the ``Services`` bundle the composition root (app/bootstrap.py) builds and
the API consumes. Must not know HTTP or QEMU: services write desired state and
submit operations; the host agent does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtfleet.service.console import ConsoleAccess, NoConsole
from virtfleet.service.events import EventService
from virtfleet.service.host import HostService
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner

__all__ = [
    "ConsoleAccess",
    "EventService",
    "HostService",
    "ImageService",
    "InstanceService",
    "OperationRunner",
    "Services",
]


@dataclass
class Services:
    instances: InstanceService
    images: ImageService
    operations: OperationRunner
    host: HostService
    events: EventService
    console: ConsoleAccess = field(default_factory=NoConsole)
