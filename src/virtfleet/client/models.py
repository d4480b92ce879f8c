"""Response models the client parses into, for resources whose server-side type the client
must not import (the instance view, image records). Lenient: unknown fields are ignored
so an older client keeps working against a newer daemon.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from virtfleet.model.instance import DesiredState, InstanceSpec, InstanceStatus, Ownership
from virtfleet.model.network import NicAddress


class Instance(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    spec: InstanceSpec
    status: InstanceStatus
    desired: DesiredState
    mode: str
    owner: Ownership | None = None  # owning host id and ownership epoch
    addresses: list[NicAddress] = []
    pending: list[dict[str, Any]] = []  # spec changes the running VM does not have yet


class Image(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    path: str
    format: str
    virtual_size_bytes: int
    actual_size_bytes: int
    sha256: str
    builder: str
    created_at: datetime
    kind: str = "image"
    source: str = ""
    defaults: dict[str, Any] | None = None
    generalised: list[str] = Field(default_factory=list)  # templates from a VM
    effective: dict[str, Any] = Field(default_factory=dict)  # templates: field -> value, set_by
    oci: dict[str, Any] | None = None  # imported OCI images: format, config, layers
