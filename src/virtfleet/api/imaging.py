"""Wire schemas of the image-import/export, template and clone requests (unknown fields rejected).

Must not hold behaviour beyond field validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.instance import MAX_VCPUS, MIN_MEMORY_MIB, Strict
from virtfleet.model.names import NameStr, validate_name
from virtfleet.model.template import MAX_BULK, CloneMode, TemplateDefaults

HostPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="A file in the daemon's import (or export) directory, relative to it or "
        "absolute; only the local root over the Unix socket may name any host path.",
    ),
]


class ImportImage(Strict):
    name: NameStr
    path: HostPath
    format: str | None = None  # raw, qcow2, vmdk, vhdx, vpc (vhd), vdi; None = detect
    force: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "image name")


class ExportImage(Strict):
    path: HostPath
    format: Literal["qcow2", "raw", "vmdk"] = "qcow2"


class CreateTemplate(Strict):
    """A template from a stopped VM (``instance``) or from an image (``image``)."""

    name: NameStr
    instance: str | None = None
    image: str | None = None
    defaults: TemplateDefaults | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "template name")


class CloneTemplate(Strict):
    """VMs from a template: ``names`` (``web-{1..10}`` ranges expand) or one name + ``count``."""

    names: Annotated[
        list[Annotated[str, Field(max_length=80)]], Field(min_length=1, max_length=MAX_BULK)
    ]
    count: Annotated[int, Field(ge=1, le=MAX_BULK)] | None = None
    clone: CloneMode = "linked"
    start: bool = False
    cloud_init: CloudInit | None = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None

    def overrides(self) -> dict[str, Any]:
        fields = {"vcpus": self.vcpus, "memory_mib": self.memory_mib}
        return {k: v for k, v in fields.items() if v is not None}


class ImportOva(Strict):
    path: HostPath
    name: str | None = None  # default: from the OVF's system name
    start: bool = False


class ExportOva(Strict):
    path: HostPath
