"""Templates: the VM settings a golden image carries for the clones made from it. Pure data.

Also the bulk-name rule: ``web-{1..10}`` expands to ``web-1`` ... ``web-10``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from virtfleet.errors import InvalidInputError
from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.instance import (
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    START_ORDER_MAX,
    Accel,
    BootSpec,
    DeviceModel,
    Firmware,
    GuestOs,
    NicSpec,
    RestartPolicy,
    Strict,
)

MAX_BULK = 100
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


class TemplateDefaults(Strict):
    """What a clone gets unless the request says otherwise; None = not set by the template
    (the clone then gets what ``vm create --image`` gives: ``model.defaults``).

    Never per-machine identity (MACs, UUID): ``model.defaults.generalise`` strips it.
    """

    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    max_vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    max_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    min_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    cpu_limit_pct: Annotated[float, Field(gt=0, le=100 * MAX_VCPUS)] | None = None
    cpu_weight: Annotated[int, Field(ge=1, le=10000)] | None = None
    nics: list[NicSpec] | None = Field(default=None, max_length=8)
    boot: BootSpec | None = None
    accel: Accel | None = None
    device_model: DeviceModel | None = None
    firmware: Firmware | None = None
    tpm: bool | None = None
    os: GuestOs | None = None
    restart_policy: RestartPolicy | None = None
    guest_agent: bool | None = None
    cloud_init: CloudInit | None = None
    autostart: bool | None = None
    start_order: Annotated[int, Field(ge=0, le=START_ORDER_MAX)] | None = None
    start_delay_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    host_shutdown: Literal["stop", "suspend"] | None = None

    def set_fields(self) -> dict[str, Any]:
        """The fields this template sets, as ``InstanceSpec`` input."""
        return {
            k: v for k, v in self.model_dump(mode="json").items() if getattr(self, k) is not None
        }


CloneMode = Literal["linked", "full"]


def expand_names(patterns: list[str], count: int | None = None) -> list[str]:
    """Expand ``{a..b}`` ranges (bash-like, one per pattern) and ``count`` into names.

    ``count`` with a single plain name ``web`` gives ``web-1`` ... ``web-N``.
    ``InvalidInputError`` on an empty, duplicated or too long list.
    """
    names: list[str] = []
    for pattern in patterns:
        match = _RANGE.search(pattern)
        if match is None:
            names.append(pattern)
            continue
        lo, hi = int(match.group(1)), int(match.group(2))
        step = 1 if hi >= lo else -1
        if abs(hi - lo) >= MAX_BULK:
            raise InvalidInputError(f"{pattern!r} expands to more than {MAX_BULK} names")
        width = len(match.group(1)) if match.group(1).startswith("0") else 0
        for i in range(lo, hi + step, step):
            names.append(pattern[: match.start()] + str(i).zfill(width) + pattern[match.end() :])
    if count is not None:
        if len(names) != 1 or count < 1:
            raise InvalidInputError("count needs exactly one base name and a count >= 1")
        names = [f"{names[0]}-{i}" for i in range(1, count + 1)]
    if not names or len(names) > MAX_BULK:
        raise InvalidInputError(f"give 1 to {MAX_BULK} instance names, not {len(names)}")
    if len(set(names)) != len(names):
        raise InvalidInputError("instance names must be unique")
    return names
