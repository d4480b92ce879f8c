"""Image use cases: list, show, build (an operation with progress) and delete base images.

Owns the rules that span images and instances (an image in use by an instance
spec cannot be deleted) and the image events. Must not touch image files or
builders itself: that is ``virtfleet.storage.images.ImageStore``'s job.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.images import ImageRecord, ImageStore, Progress

__all__ = ["ImageRecord", "ImageService", "image_users"]


def image_users(specs: builtins.list[InstanceSpec], image: str) -> builtins.list[str]:
    """Names of the instances whose spec refers to ``image`` (as base image or disk image)."""
    return sorted(
        s.name for s in specs if s.image == image or any(d.image == image for d in s.disks)
    )


class ImageService:
    def __init__(
        self, images: ImageStore, store: StateStore, runner: OperationRunner, events: EventLog
    ) -> None:
        self.store = images
        self._instances = InstanceRepo(store)
        self._runner = runner
        self._events = events

    @property
    def builders(self) -> builtins.list[str]:
        return self.store.builders

    async def list(self) -> builtins.list[ImageRecord]:
        return await self.store.list()

    async def get(self, name: str) -> ImageRecord:
        """The image record; ``NotFoundError`` if there is none."""
        return await self.store.get(name)

    async def build(self, name: str, builder: str = "tiny", force: bool = False) -> Operation:
        """Validate now (name, builder, existence), then build in an ``image.build`` operation.

        Cancelling the operation stops waiting, not the builder thread: it finishes its
        atomic write in the background, and the image is then not recorded.
        """
        await self.store.check_build(name, builder, force)

        async def run(ctx: OpContext) -> dict[str, Any]:
            record = await self.store.build(name, _threadsafe(ctx), builder, force)
            await self._events.append(
                Event(
                    kind="image.built",
                    target=f"image/{name}",
                    message=f"image {name} built",
                    data={"builder": builder, "sha256": record.sha256},
                )
            )
            return {"image": record.model_dump(mode="json")}

        return await self._runner.submit("image.build", f"image/{name}", run)

    async def delete(self, name: str) -> bool:
        """Delete the image unless an instance uses it (``InUseError``); missing is success."""
        validate_name(name, "image name")
        specs = [r.spec for r in await self._instances.list()]
        existed = await self.store.delete(name, image_users(specs, name))
        if existed:
            await self._events.append(
                Event(kind="image.deleted", target=f"image/{name}", message=f"image {name} deleted")
            )
        return existed


def _threadsafe(ctx: OpContext) -> Progress:
    """A plain progress callback, callable from the builder's thread, that reports into ``ctx``."""
    loop = asyncio.get_running_loop()

    def report(pct: int, message: str) -> None:
        asyncio.run_coroutine_threadsafe(ctx.progress(pct, message), loop)

    return report
