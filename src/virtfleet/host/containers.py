"""The host side of container use cases: exec, live limits, rootfs snapshots, host check
(runtime, user namespaces, a data directory the mapped root cannot reach).

Implements ``hostops.ContainerOps`` over the container driver (the
``RoutingDriver``'s OCI half), translating results into service types. Must not
apply rules (the service does) or touch the store.
"""

from __future__ import annotations

import builtins
from pathlib import Path

from virtfleet.drivers.base import DriverInfo
from virtfleet.drivers.oci.access import fix_hint
from virtfleet.drivers.routing import ContainerDriver
from virtfleet.model.container import ExecOutput
from virtfleet.model.host import Check
from virtfleet.model.instance import InstanceSpec


class ContainerHost:
    def __init__(self, driver: ContainerDriver) -> None:
        self.driver = driver

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float) -> ExecOutput:
        result = await self.driver.exec(name, argv, timeout_s)
        return ExecOutput(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        await self.driver.update_limits(name, spec)

    async def snapshot(self, name: str, snap: str) -> None:
        await self.driver.snapshot(name, snap)

    async def restore(self, name: str, snap: str) -> None:
        await self.driver.restore(name, snap)

    def snapshots(self, name: str) -> builtins.list[str]:
        return self.driver.snapshots(name)

    def delete_snapshot(self, name: str, snap: str) -> None:
        self.driver.delete_snapshot(name, snap)


def container_checks(info: DriverInfo) -> list[Check]:
    """``host check`` rows: the OCI runtime in use and why each candidate can or cannot run."""
    if "containers" not in info.details:
        return []  # no container driver (the fake platform)
    runtime = info.details.get("runtime")
    reasons = {k.removeprefix("runtime_"): v for k, v in info.details.items()}
    why = "; ".join(f"{k}: {reasons[k]}" for k in ("crun", "runc") if k in reasons)
    if runtime:
        row = Check(name="container runtime", ok=True, level="ok", detail=f"{runtime} ({why})")
    else:
        row = Check(name="container runtime", ok=False, level="warn", detail=f"none: {why}")
    userns = str(info.details.get("user_namespaces", "off"))
    detail = "containers run in a user namespace" if userns == "on" else "host forbids them"
    rows = [row, Check(name="user namespaces", ok=True, level="ok", detail=f"{userns}: {detail}")]
    return [*rows, *data_dir_checks(info)]


def data_dir_checks(info: DriverInfo) -> list[Check]:
    """A warning row when the containers' mapped root cannot reach the runtime directory
    their rootfs is mounted in (every container start would fail with ``permission
    denied``), with the fix."""
    blocked = info.details.get("unreachable_dir")
    if not blocked:
        return []
    detail = (
        f"the containers' mapped root cannot traverse {blocked}: every container start "
        f"fails (permission denied); fix: {fix_hint(Path(blocked))}"
    )
    return [Check(name="container data path", ok=False, level="warn", detail=detail)]
