"""A new instance's defaults and its per-machine identity: the one place that decides them.

Every way of making an instance (``vm create --image``, clones of a template, OVA
import, restore to a new VM) ends in ``complete``, so a field nobody set gets the
same value whichever way the instance was made. ``generalise`` and
``template_defaults`` strip what belongs to one machine (NIC MACs, the SMBIOS UUID
behind the cloud-init instance-id) so a copy never inherits it. Pure; no I/O.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import ValidationError

from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.instance import Firmware, GuestOs, InstanceSpec, NicSpec
from virtfleet.model.template import TemplateDefaults
from virtfleet.model.validation import invalid_input

# Fields that name or identify one machine: never copied into a template or a new VM.
IDENTITY = frozenset({"name", "uuid"})
# Fields a template does not carry: its own disk is the clone's disk, it makes VMs (an
# application container's mode, env and command are its own; a driver ISO is a host file
# whose path was checked for the one who named it, never for whoever clones).
NOT_TEMPLATED = frozenset(
    {"kind", "image", "disks", "pids_max", "container_mode", "env", "cmd", "driver_iso"}
)


def platform_defaults(kind: str, os: GuestOs = GuestOs.LINUX) -> dict[str, Any]:
    """Defaults beyond ``InstanceSpec``'s own: a VM nobody gave NICs gets one user-mode NIC
    (restricted), as QEMU's own default would; a container gets loopback only. A Windows
    VM gets what Windows 11 / Server 2022 require: UEFI Secure Boot and a TPM 2.0."""
    if kind != "vm":
        return {}
    windows = {"firmware": Firmware.UEFI_SECURE, "tpm": True} if os is GuestOs.WINDOWS else {}
    return {"nics": [NicSpec().model_dump()], **windows}


def complete(spec: InstanceSpec) -> InstanceSpec:
    """``spec`` as a new instance: fields the request left unset get the platform's
    defaults, and a fresh UUID unless one was given."""
    unset = {
        k: v
        for k, v in platform_defaults(spec.kind, spec.os).items()
        if k not in spec.model_fields_set
    }
    fields = {**spec.model_dump(exclude_unset=True), **unset}
    fields["uuid"] = spec.uuid or str(uuid.uuid4())
    return InstanceSpec.model_validate(fields)


def compose(request: dict[str, Any], template: TemplateDefaults | None = None) -> InstanceSpec:
    """A new instance from a template's set fields and the request's (the request wins;
    cloud-init settings merge field by field), completed by ``complete``."""
    base = template.set_fields() if template else {}
    fields = {**base, **request}
    if base.get("cloud_init") and request.get("cloud_init"):
        merged = CloudInit.model_validate(base["cloud_init"]).merged(
            CloudInit.model_validate(request["cloud_init"])
        )
        fields["cloud_init"] = merged.model_dump(exclude_none=True)
    if fields.get("cloud_init"):
        ci = CloudInit.model_validate(fields["cloud_init"])
        fields["cloud_init"] = ci.for_instance(str(fields["name"])).model_dump(exclude_none=True)
    try:
        return complete(InstanceSpec.model_validate(fields))
    except ValidationError as err:  # the request and the template do not go together
        raise invalid_input(err) from err


def generalise(spec: InstanceSpec) -> tuple[dict[str, Any], list[str]]:
    """``spec``'s fields without its per-machine identity, and what was removed."""
    fields = spec.model_dump(exclude_unset=False, exclude={"uuid"})
    removed = [f"SMBIOS UUID {spec.uuid}"] if spec.uuid else []
    for index, nic in enumerate(spec.nics):
        if nic.mac:
            removed.append(f"MAC {nic.mac} of {spec.nic_names[index]}")
            fields["nics"][index]["mac"] = None
    if spec.cloud_init is not None:
        removed.append("cloud-init instance-id (derived from the UUID)")
        hostname = spec.cloud_init.hostname or ""
        pattern = _name_in_hostname(spec.name).sub("{name}", hostname)
        if pattern != hostname:
            fields["cloud_init"]["hostname"] = pattern
            removed.append(f"hostname {hostname!r} -> {pattern!r}")
    return fields, removed


def _name_in_hostname(name: str) -> re.Pattern[str]:
    # The VM's name as a whole word of its hostname ("ci-web-1" of web-1, not "web-10").
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])")


def template_defaults(spec: InstanceSpec) -> tuple[TemplateDefaults, list[str]]:
    """The defaults a template made from VM ``spec`` carries, and what it generalised."""
    fields, removed = generalise(spec)
    # Only what differs from a new instance's defaults: the rest the template leaves unset.
    plain = complete(InstanceSpec(name=spec.name, kind=spec.kind)).model_dump()
    keep = {k: v for k, v in fields.items() if k in TemplateDefaults.model_fields}
    return TemplateDefaults.model_validate(
        {k: v for k, v in keep.items() if v != plain.get(k)}
    ), removed


def fresh_copy(spec: InstanceSpec, name: str) -> InstanceSpec:
    """``spec`` as a new machine ``name`` (restore to a new VM, a copy): same settings,
    new MACs and UUID."""
    fields, _ = generalise(spec)
    fields["name"] = name
    try:
        return complete(InstanceSpec.model_validate(fields))
    except ValidationError as err:  # the request and the template do not go together
        raise invalid_input(err) from err


def effective(template: TemplateDefaults) -> dict[str, dict[str, Any]]:
    """Each template field's value for a clone and who sets it: ``template`` or ``default``."""
    plain = complete(InstanceSpec(name="example")).model_dump(mode="json")
    return {
        field: (
            {"value": getattr(template, field), "set_by": "template"}
            if getattr(template, field) is not None
            else {"value": plain[field], "set_by": "default"}
        )
        for field in TemplateDefaults.model_fields
    }
