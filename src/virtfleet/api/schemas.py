"""Wire schemas of request bodies: every one rejects unknown fields.

Owns the shapes clients send (create instance, change state, build image).
Must not hold behaviour beyond field validation; responses are the model and
service types themselves (``Instance``, ``Operation``, ``ImageRecord``, ...).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from virtfleet.model.instance import InstanceSpec, Strict
from virtfleet.model.names import validate_name


class CreateInstance(InstanceSpec):
    """``InstanceSpec`` fields plus ``start``: run it once created."""

    start: bool = False

    def spec(self) -> InstanceSpec:
        return InstanceSpec.model_validate(self.model_dump(exclude={"start"}))


class StateChange(Strict):
    action: Literal["start", "stop", "restart", "pause", "resume"]
    force: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class BuildImage(Strict):
    name: str
    builder: str = "tiny"
    force: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "image name")
