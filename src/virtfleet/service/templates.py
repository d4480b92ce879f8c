"""Templates and clones: turn a stopped VM (or an image) into a read-only golden image, and
create VMs from it as linked (qcow2 overlay) or full (independent copy) clones, in bulk.

Owns the rules: a template comes only from a stopped VM (a running VM's disk is
not consistent), clone names are all free before anything is written, and a
bulk create is all-or-nothing (any failure deletes every VM it made, disks
included). Must not run QEMU: instances are created through ``InstanceService``
and started by the agent.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from virtfleet.errors import AlreadyExistsError, InvalidInputError, InvalidStateError
from virtfleet.hostops import DiskOps
from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.defaults import compose, effective, template_defaults
from virtfleet.model.event import Event
from virtfleet.model.instance import DiskSpec, Firmware, InstanceSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.model.template import CloneMode, TemplateDefaults, expand_names
from virtfleet.service.disks import refuse_kept
from virtfleet.service.errcodes import error_from_code
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import qemuimg
from virtfleet.storage.images import ImageRecord, ImageStore

CLONE_WAIT_S = 300.0


class TemplateView(ImageRecord):
    """A template with what each of its clones' settings will be and who sets it."""

    effective: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _view(record: ImageRecord) -> TemplateView:
    d = record.defaults or TemplateDefaults()
    return TemplateView(**dict(record), effective=effective(d))


class TemplateService:
    def __init__(
        self,
        images: ImageStore,
        store: StateStore,
        instances: InstanceService,
        runner: OperationRunner,
        events: EventLog,
        disks: DiskOps,
    ) -> None:
        self._images = images
        self._repo = InstanceRepo(store)
        self._instances = instances
        self._runner = runner
        self._events = events
        self._disks = disks

    async def list(self) -> builtins.list[TemplateView]:
        return [_view(r) for r in await self._images.list() if r.kind == "template"]

    async def get(self, name: str) -> TemplateView:
        record = await self._images.get(name)
        if record.kind != "template":
            raise InvalidInputError(f"image {name!r} is not a template")
        return _view(record)

    async def create(
        self,
        name: str,
        instance: str | None = None,
        image: str | None = None,
        defaults: TemplateDefaults | None = None,
    ) -> Operation:
        """Make template ``name`` from stopped VM ``instance`` or from ``image`` (one of them).

        The disk is flattened into a standalone qcow2 (mode 0444) in an operation.
        ``InvalidStateError`` now if the VM is not stopped.
        """
        dest = await self._images.check_new(validate_name(name, "template name"))
        source, fmt, defaults, generalised = await self._source(instance, image, defaults)
        compose({"name": "check"}, defaults)  # a template whose clones would be invalid: 400 now
        firmware = defaults.firmware or Firmware.BIOS

        async def run(ctx: OpContext) -> dict[str, Any]:
            await _flatten(source, fmt, dest, ctx)
            if instance:  # the VM's boot entries, keys and TPM travel with its disk
                await self._disks.machine_to_template(instance, firmware, dest)
            record = await self._images.inspect(name, dest)
            record = record.model_copy(
                update={"kind": "template", "defaults": defaults, "generalised": generalised,
                        "source": f"instance/{instance}" if instance else f"image/{image}"}
            )  # fmt: skip
            await self._images.record(record)
            await self._emit("template.created", name, f"template {name} created")
            return {"template": record.model_dump(mode="json"), "generalised": generalised}

        # On the VM's own queue: a start asked for meanwhile waits until the copy is done.
        target = f"instance/{instance}" if instance else f"image/{name}"
        return await self._runner.submit("template.create", target, run)

    async def _source(
        self, instance: str | None, image: str | None, defaults: TemplateDefaults | None
    ) -> tuple[Path, str, TemplateDefaults, builtins.list[str]]:
        if (instance is None) == (image is None):
            raise InvalidInputError("give exactly one of instance or image")
        if defaults is not None and any(n.mac for n in defaults.nics or []):
            raise InvalidInputError("a template never carries MACs: each clone gets its own")
        if image is not None:
            img = await self._images.get(image)
            return Path(img.path), img.format, defaults or TemplateDefaults(), []
        assert instance is not None
        rec = await self._repo.get(validate_name(instance, "instance name"))
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(
                rec.status.power.value, "stopped (a running VM's disk is not consistent; "
                "stop it or clone from a snapshot)",
            )  # fmt: skip
        spec = rec.spec.normalized()
        made, generalised = template_defaults(spec)
        return self._boot_disk(spec), "qcow2", defaults or made, generalised

    def _boot_disk(self, spec: InstanceSpec) -> Path:
        disk = next((d for d in spec.disks if d.boot), None)
        if disk is None:
            raise InvalidInputError(f"instance {spec.name!r} has no disk to make a template of")
        path = self._disks.disk_path(spec.name, disk.name)
        if path.exists():
            return path
        if disk.image:  # never started: its disk is still just its image
            return self._images.file_for(disk.image)
        raise InvalidInputError(f"instance {spec.name!r} has no disk file yet")

    async def clone(
        self,
        template: str,
        names: builtins.list[str],
        count: int | None = None,
        mode: CloneMode = "linked",
        start: bool = False,
        cloud_init: CloudInit | None = None,
        overrides: dict[str, Any] | None = None,
        keep_tpm: bool = False,
        pool: str | None = None,
    ) -> Operation:
        """Create VMs ``names`` (``web-{1..3}`` ranges, or one name and ``count``) from
        ``template`` in one ``template.clone`` operation; all or nothing. Each clone's TPM
        is a new one unless ``keep_tpm`` (then it is a copy of the template VM's). ``pool``:
        the storage pool of their disks (linked there where it has ``thin_clone``).

        Validates now: the template exists, names are valid and free, specs are valid.
        """
        record = await self.get(template)
        specs = [
            self._clone_spec(record, n, mode, cloud_init, overrides or {}, pool)
            for n in expand_names(names, count)
        ]
        for spec in specs:
            await self._check_free(spec.name)
            if self._instances.pools is not None:  # the pool exists, is reachable, has room
                await self._instances.pools.admit(spec)

        async def run(ctx: OpContext) -> dict[str, Any]:
            made: builtins.list[str] = []
            try:
                await self._make_all(record, specs, mode, keep_tpm, start, ctx, made)
            except BaseException:
                await asyncio.shield(self._undo(made))
                raise
            return {"template": template, "mode": mode, "instances": made}

        return await self._runner.submit("template.clone", f"image/{template}", run)

    def _clone_spec(
        self, record: ImageRecord, name: str, mode: CloneMode,
        cloud_init: CloudInit | None, overrides: dict[str, Any], pool: str | None = None,
    ) -> InstanceSpec:  # fmt: skip
        disk = (
            DiskSpec(name="root", image=record.name, boot=True, pool=pool)
            if mode == "linked"
            else DiskSpec(
                name="root", size_gib=_gib(record.virtual_size_bytes), boot=True, pool=pool
            )
        )
        request: dict[str, Any] = {
            "name": validate_name(name, "instance name"), "disks": [disk.model_dump()],
            **overrides,
        }  # fmt: skip
        if cloud_init is not None:
            request["cloud_init"] = cloud_init.model_dump(exclude_unset=True)
        return compose(request, record.defaults)

    async def _check_free(self, name: str) -> None:
        if await self._repo.find(name) is not None:
            raise AlreadyExistsError(f"instance {name!r} already exists")
        refuse_kept(self._disks, name)  # a clone makes its own disk: never boots kept ones

    async def _make_all(
        self, record: ImageRecord, specs: builtins.list[InstanceSpec], mode: CloneMode,
        keep_tpm: bool, start: bool, ctx: OpContext, made: builtins.list[str],
    ) -> None:  # fmt: skip
        base = Path(record.path)
        for i, spec in enumerate(specs):
            await self._check_free(spec.name)

            async def make(
                name: str = spec.name, firmware: Firmware = spec.firmware,
                pool: str | None = spec.disks[0].pool,
            ) -> None:  # fmt: skip
                """The clone's disk, once the name is ours (never before: see _undo)."""
                linked, size = mode == "linked", record.virtual_size_bytes
                try:
                    await self._disks.disk_clone(
                        name, "root", base, linked, size, firmware, keep_tpm, pool
                    )
                except BaseException:
                    self._disks.remove_disks(name)  # checked absent, then claimed: ours alone
                    raise

            op = await self._instances.create(spec, prepare=make)
            made.append(spec.name)
            await self._await_op(op)
            await ctx.progress(int(80 * (i + 1) / len(specs)), f"created {spec.name}")
        if start:
            ops = [await self._instances.change_state(n, "start") for n in made]
            await asyncio.gather(*(self._await_op(op) for op in ops))
            await ctx.progress(100, f"started {len(made)} instances")

    async def _await_op(self, op: Operation) -> None:
        done = await self._runner.wait(op.id, CLONE_WAIT_S)
        if done.status != "success":
            raise _op_error(done)

    async def _undo(self, made: builtins.list[str]) -> None:
        """Delete every instance this operation made, with its disks (the agent removes
        them with the instance; a name already gone may be someone else's now, so its
        files are never touched here); never raise."""
        for name in reversed(made):
            with contextlib.suppress(Exception):
                op = await self._instances.delete(name, force=True, delete_disks=True)
                await self._runner.wait(op.id, CLONE_WAIT_S)

    async def _emit(self, kind: str, name: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"image/{name}", message=message))


def _gib(size_bytes: int) -> float:
    return max(size_bytes, 1 << 20) / (1 << 30)


async def _flatten(source: Path, fmt: str, dest: Path, ctx: OpContext) -> None:
    """Convert ``source`` (following its backing chain) into a standalone read-only qcow2."""
    tmp = dest.with_name(f".{dest.name}.flattening")
    try:
        await qemuimg.convert(source, fmt, tmp, "qcow2", ctx.progress)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _op_error(op: Operation) -> Exception:
    return error_from_code(op.error_code or "internal", op.error_message or f"{op.kind} failed")
