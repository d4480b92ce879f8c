"""Calls of the image import/export, template, clone and guest-agent endpoints.

Owns their wire contract as the client sees it (sync and async clients run them
with ``client.call``). Must not do I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtfleet.client.calls import Call, img, inst, many, one, segment

if TYPE_CHECKING:
    from virtfleet.client.models import Image
    from virtfleet.model.guest import GuestInfo
    from virtfleet.model.operation import Operation


def tpl(name: str) -> str:
    return f"/1.0/templates/{segment(name, 'template name')}"


def import_image(
    name: str, path: str, fmt: str | None = None, force: bool = False
) -> Call[Operation]:
    segment(name, "image name")
    body = {"name": name, "path": path, "format": fmt, "force": force}
    return Call("POST", "/1.0/images/import", one("model.operation:Operation"), json=body)


def fetch_image(name: str, host: str | None = None) -> Call[Operation]:
    """Have member ``host`` (default: the daemon asked) hold image ``name``'s file."""
    body = {"host": host}
    return Call("POST", f"{img(name)}/fetch", one("model.operation:Operation"), json=body)


def import_oci(
    name: str, path: str = "", from_ref: str = "", force: bool = False
) -> Call[Operation]:
    segment(name, "image name")
    body = {"name": name, "path": path, "from_ref": from_ref, "force": force}
    return Call("POST", "/1.0/images/import-oci", one("model.operation:Operation"), json=body)


def export_image(name: str, path: str, fmt: str = "qcow2") -> Call[Operation]:
    return Call(
        "POST",
        f"{img(name)}/export",
        one("model.operation:Operation"),
        json={"path": path, "format": fmt},
    )


def list_templates() -> Call[list[Image]]:
    return Call("GET", "/1.0/templates", many("client.models:Image"))


def get_template(name: str) -> Call[Image]:
    return Call("GET", tpl(name), one("client.models:Image"))


def create_template(
    name: str, instance: str | None = None, image: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> Call[Operation]:  # fmt: skip
    segment(name, "template name")
    body = {"name": name, "instance": instance, "image": image, "defaults": defaults}
    return Call("POST", "/1.0/templates", one("model.operation:Operation"), json=body)


def delete_template(name: str) -> Call[bool]:
    return Call("DELETE", tpl(name), lambda d: bool(d["deleted"]))


def clone_template(template: str, names: list[str], **fields: Any) -> Call[Operation]:
    """``fields``: count, clone ("linked"/"full"), start, cloud_init, vcpus, memory_mib,
    keep_tpm (the template's TPM instead of a new one)."""
    body = {"names": names, **{k: v for k, v in fields.items() if v is not None}}
    return Call("POST", f"{tpl(template)}/instances", one("model.operation:Operation"), json=body)


def guest_info(name: str) -> Call[GuestInfo]:
    return Call("GET", f"{inst(name)}/guest", one("model.guest:GuestInfo"))


def import_ova(
    path: str, name: str | None = None, start: bool = False, keep_macs: bool = False
) -> Call[Operation]:
    body = {"path": path, "name": name, "start": start, "keep_macs": keep_macs}
    return Call("POST", "/1.0/ova/import", one("model.operation:Operation"), json=body)


def export_ova(instance: str, path: str) -> Call[Operation]:
    return Call(
        "POST",
        f"{inst(instance)}/export-ova",
        one("model.operation:Operation"),
        json={"path": path},
    )


def export_disk(instance: str, disk: str, path: str, fmt: str = "qcow2") -> Call[Operation]:
    target = f"{inst(instance)}/disks/{segment(disk, 'disk name')}/export"
    return Call(
        "POST", target, one("model.operation:Operation"), json={"path": path, "format": fmt}
    )
