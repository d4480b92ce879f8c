"""Wire schemas of request bodies: every one rejects unknown fields.

Owns the shapes clients send (create instance, change state, build image, log in,
create users and tokens).
Must not hold behaviour beyond field validation; responses are the model and
service types themselves (``Instance``, ``Operation``, ``ImageRecord``, ...).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from virtfleet.model.auth import Role
from virtfleet.model.instance import InstanceSpec, Strict
from virtfleet.model.names import NameStr, validate_name


class CreateInstance(InstanceSpec):
    """``InstanceSpec`` fields plus ``start``: run it once created, ``reuse_disks``:
    attach the disks kept from a deleted instance of this name (else such disks refuse it),
    and ``host``: the cluster member (id or name) to own it (default: placement chooses)."""

    start: bool = False
    reuse_disks: bool = False
    host: Annotated[str | None, Field(max_length=128)] = None

    def spec(self) -> InstanceSpec:
        # Only what the request set: the rest comes from model.defaults.complete.
        fields = self.model_dump(exclude={"start", "reuse_disks", "host"}, exclude_unset=True)
        return InstanceSpec.model_validate(fields)


class StateChange(Strict):
    action: Literal["start", "stop", "restart", "pause", "resume"]
    force: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Answer once the operation is done (or this many seconds passed): one request, no poll.
    wait_s: Annotated[float, Field(ge=0, le=600)] = 0.0


class BuildImage(Strict):
    name: NameStr
    builder: str = "tiny"
    force: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "image name")


class Login(Strict):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class CreateUser(Strict):
    username: str
    password: str
    role: Role = Role.VIEWER


class UpdateUser(Strict):
    """What an admin changes about a user; fields left out stay as they are."""

    role: Role | None = None
    disabled: bool | None = None


class ChangePassword(Strict):
    """``current_password`` is needed when users change their own password (not admins)."""

    password: str
    current_password: str | None = None


class CreateToken(Strict):
    """Without ``expires_in_s`` a token lives 90 days; ``never_expires`` asks for no end."""

    role: Role
    expires_in_s: Annotated[float | None, Field(gt=0, le=10 * 365 * 86400)] = None
    never_expires: bool = False
    description: Annotated[str, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _one_lifetime(self) -> CreateToken:
        if self.never_expires and self.expires_in_s is not None:
            raise ValueError("give expires_in_s or never_expires, not both")
        return self
