"""Guest-agent use cases: what a running VM's qemu-guest-agent reports (``vm show``).

Owns the rules around asking (instance exists, runs, has an agent channel). Must
not speak the agent protocol: the owning host does (``HostOps.guest_info``).
"""

from __future__ import annotations

from virtfleet.hostops import GuestOps
from virtfleet.model.guest import GuestInfo
from virtfleet.model.instance import PowerState
from virtfleet.model.names import validate_name
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore


class GuestService:
    def __init__(self, store: StateStore, host: GuestOps) -> None:
        self._repo = InstanceRepo(store)
        self._host = host

    async def info(self, name: str) -> GuestInfo:
        """The agent's report; ``agent=False`` with a reason when there is none to ask."""
        rec = await self._repo.get(validate_name(name, "instance name"))
        if not rec.spec.guest_agent:
            return GuestInfo(error="no guest agent channel (guest_agent is off)")
        if rec.status.power is not PowerState.RUNNING:
            return GuestInfo(error=f"instance is {rec.status.power.value}")
        return await self._host.guest_info(name)
