"""Wire schemas of the image-import/export, template and clone requests (unknown fields rejected).

Must not hold behaviour beyond field validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.instance import (
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    Accel,
    DeviceModel,
    Firmware,
    GuestOs,
    NicSpec,
    RestartPolicy,
    Strict,
)
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


class FetchImage(Strict):
    host: str | None = Field(
        default=None,
        max_length=253,
        description="The member (id or name) that is to hold the image's file; "
        "default: the host answering.",
    )


class ImportImage(Strict):
    name: NameStr
    path: HostPath
    format: str | None = None  # raw, qcow2, vmdk, vhdx, vpc (vhd), vdi; None = detect
    force: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "image name")


class ImportOciImage(Strict):
    """An OCI image layout (directory or tarball) or ``docker save`` archive at ``path``,
    or a registry image skopeo fetches (``from_ref``: ``docker://…``): one of the two."""

    name: NameStr
    path: Annotated[str, Field(max_length=4096)] = ""
    from_ref: Annotated[str, Field(max_length=1024, pattern=r"^(docker://.+)?$")] = ""
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
    """VMs from a template: ``names`` (``web-{1..10}`` ranges expand) or one name + ``count``.

    The settings fields override the template's for every VM made (unset: the template's,
    else the defaults of ``vm create --image``)."""

    names: Annotated[
        list[Annotated[str, Field(max_length=80)]], Field(min_length=1, max_length=MAX_BULK)
    ]
    count: Annotated[int, Field(ge=1, le=MAX_BULK)] | None = None
    clone: CloneMode = "linked"
    start: bool = False
    cloud_init: CloudInit | None = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    max_vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    max_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    min_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB)] | None = None
    nics: Annotated[list[NicSpec], Field(max_length=8)] | None = None
    guest_agent: bool | None = None
    accel: Accel | None = None
    device_model: DeviceModel | None = None
    restart_policy: RestartPolicy | None = None
    firmware: Firmware | None = None
    tpm: bool | None = None
    os: GuestOs | None = None
    # A clone's TPM is a new one (as its MACs and UUID are) unless this keeps the template's.
    keep_tpm: bool = False
    pool: NameStr | None = None  # the storage pool of the clones' disks; None: ``local``

    @field_validator("nics")
    @classmethod
    def _no_macs(cls, v: list[NicSpec] | None) -> list[NicSpec] | None:
        if any(n.mac for n in v or []):
            raise ValueError("clones get their own MACs: a clone request cannot name one")
        return v

    def overrides(self) -> dict[str, Any]:
        skip = {"names", "count", "clone", "start", "cloud_init", "keep_tpm", "pool"}
        return self.model_dump(mode="json", exclude=skip, exclude_none=True)


class ImportOva(Strict):
    path: HostPath
    name: str | None = None  # default: from the OVF's system name
    start: bool = False
    keep_macs: bool = False  # the OVF's MACs (a move); default: new ones (a copy)


class ExportOva(Strict):
    path: HostPath
