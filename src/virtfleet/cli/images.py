"""``virtfleet image ...``: build, list, show and delete base images.

Owns arguments -> client calls -> tables/JSON for images. Must not build images itself.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, selected_remote
from virtfleet.cli.sizes import format_bytes
from virtfleet.client import imaging

app = typer.Typer(help="Base images.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="Image name.", show_default=False)]
NAMED_BUILDERS = ("tiny", "tiny-efi", "debian-12")  # `image build debian-12` needs no --builder


def host_path(path: str) -> str:
    """What to send as a host path: for the local daemon (Unix socket, trusted) the path
    made absolute; for a remote, as given: relative to its import/export directory."""
    return str(Path(path).absolute()) if selected_remote() is None else path


@command(app, "build")
def build(
    name: NameArg,
    builder: Annotated[
        str | None,
        typer.Option("--builder", help="Image builder (default: NAME if one, else tiny)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Rebuild an existing image (refused while instances use it)."),
    ] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Build an image: tiny (a minimal busybox guest), tiny-efi (the same for UEFI and
    Secure Boot) or debian-12 (debootstrap, cloud-init, qemu-guest-agent; a few minutes
    cold, cached)."""
    client = get_client()
    builder = builder or (name if name in NAMED_BUILDERS else "tiny")
    op = client.build_image(name, builder=builder, force=force)
    if output.run_operation(client, op, f"building {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"image {name} built", json_out)


@command(app, "import")
def import_(
    name: NameArg,
    path: Annotated[
        str,
        typer.Argument(
            help="Disk file: any path for the local daemon; for a remote, a file in its "
            "import directory (relative to it).",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="raw, qcow2, vmdk, vhdx, vpc/vhd, vdi (default: detect)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing image.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Import a disk image from another hypervisor, converting it to qcow2."""
    client = get_client()
    op = client.call(imaging.import_image(name, host_path(path), fmt, force))
    if output.run_operation(client, op, f"importing {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"image {name} imported", json_out)


@command(app, "fetch")
def fetch(
    name: NameArg,
    host: Annotated[
        str | None,
        typer.Option("--host", help="The member (name or id) to hold it (default: this one)."),
    ] = None,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Copy an image's file onto a cluster member from a member that has it, checked by
    its sha256 (creating an instance there does this by itself)."""
    client = get_client()
    op = client.call(imaging.fetch_image(name, host))
    if output.run_operation(client, op, f"fetching {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"image {name} is on {host or 'this host'}", json_out)


@command(app, "import-oci")
def import_oci(
    name: NameArg,
    path: Annotated[
        str | None,
        typer.Argument(
            help="OCI image layout (directory or tarball) or `docker save` archive: any path "
            "for the local daemon; for a remote, in its import directory.",
            show_default=False,
        ),
    ] = None,
    from_ref: Annotated[
        str | None,
        typer.Option("--from", help="docker://REFERENCE: fetched through skopeo instead."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing image.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Import a Docker or OCI image as a container image (layers shared by digest)."""
    client = get_client()
    call = imaging.import_oci(name, host_path(path) if path else "", from_ref or "", force)
    op = client.call(call)
    if output.run_operation(client, op, f"importing {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"image {name} imported", json_out)


@command(app, "import-ova")
def import_ova(
    path: Annotated[
        str,
        typer.Argument(
            help="OVA file: any path locally; for a remote, in its import directory.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="VM name (default: from the OVF).")
    ] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the VM once imported.")] = False,
    keep_macs: Annotated[
        bool, typer.Option("--keep-macs", help="Keep the OVF's MACs (default: new ones).")
    ] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Import an OVA/OVF package (VMware, VirtualBox...) as images plus a ready VM."""
    client = get_client()
    op = client.call(imaging.import_ova(host_path(path), name, start, keep_macs))
    done = output.run_operation(client, op, f"importing {path}", as_json=json_out, no_wait=no_wait)
    if done is not None:
        note = done.result.get("note") or ""
        output.done(
            f"VM {done.result.get('instance')} imported" + (f" ({note})" if note else ""), json_out
        )


@command(app, "export")
def export(
    name: NameArg,
    path: Annotated[
        str,
        typer.Argument(
            help="New file: any path locally; for a remote, in its export directory.",
            show_default=False,
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="qcow2, raw or vmdk.")] = "qcow2",
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export an image to a new file as qcow2, raw or vmdk."""
    client = get_client()
    op = client.call(imaging.export_image(name, host_path(path), fmt))
    if output.run_operation(client, op, f"exporting {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"image {name} exported to {path}", json_out)


@command(app, "list")
def list_(json_out: JsonOpt = False) -> None:
    """List images."""
    images = get_client().list_images()
    if json_out:
        output.print_json(images)
        return
    output.table(
        ["NAME", "KIND", "FORMAT", "VIRTUAL SIZE", "ON DISK", "BUILDER", "CREATED"],
        [
            [
                i.name,
                i.kind,
                i.format,
                format_bytes(i.virtual_size_bytes),
                format_bytes(i.actual_size_bytes),
                i.builder,
                i.created_at.strftime("%Y-%m-%d %H:%M"),
            ]
            for i in images
        ],
    )


@command(app, "show")
def show(name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one image."""
    i = get_client().get_image(name)
    if json_out:
        output.print_json(i)
        return
    output.fields(
        [
            ("name", i.name),
            ("path", i.path),
            ("format", i.format),
            ("virtual size", format_bytes(i.virtual_size_bytes)),
            ("on disk", format_bytes(i.actual_size_bytes)),
            ("sha256", i.sha256),
            ("kind", i.kind),
            ("source", i.source),
            ("builder", i.builder),
            ("created", i.created_at.isoformat(timespec="seconds")),
            *_oci_fields(i.oci),
        ]
    )
    if i.oci:
        layers = [
            [str(n), x["diff_id"], format_bytes(x["size_bytes"]), str(x["entries"])]
            for n, x in enumerate(i.oci["layers"], 1)
        ]
        output.table(["LAYER", "DIFF ID", "SIZE", "ENTRIES"], layers)


def _oci_fields(oci: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An imported image's run config, as ``image show`` prints it."""
    if not oci:
        return []
    c = oci["config"]
    labels = ", ".join(f"{k}={v}" for k, v in sorted(c["labels"].items()))
    return [
        ("entrypoint", shlex.join(c["entrypoint"])),
        ("cmd", shlex.join(c["cmd"])),
        ("env", " ".join(c["env"])),
        ("working dir", c["working_dir"]),
        ("user", c["user"]),
        ("exposed ports", " ".join(c["exposed_ports"])),
        ("labels", labels),
        ("architecture", c["architecture"]),
        ("setuid stripped", " ".join(oci["stripped_setid"])),
        ("capabilities stripped", " ".join(oci.get("stripped_caps", []))),
    ]


@command(app, "delete")
def delete(name: NameArg, json_out: JsonOpt = False) -> None:
    """Delete an image no instance uses (a missing image is not an error)."""
    deleted = get_client().delete_image(name)
    if json_out:
        output.print_json({"name": name, "deleted": deleted})
    else:
        output.done(f"image {name} deleted" if deleted else f"image {name} did not exist", False)
