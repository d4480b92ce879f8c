"""Getting an image's file onto the host that needs it, from a member that holds it.

Owns ``ImageFetcher``. ``ensure(names, host, report)``: host ``host`` ends up holding the
files of images ``names``; this host fetches a missing one itself (``fetch_here``),
another host is asked to (its ``POST /1.0/images/{name}/fetch``, signed like a forwarded
request) and its ``image.fetch`` operation, a record in the shared store, is followed
with its progress passed on. ``fetch_here`` streams the file from an online holder
(``GET /1.0/images/{name}/file`` on it) into the image store, which publishes it only
if its length and sha256 are the record's; a holder that fails or sends bad bytes is
followed by the next, and if none succeeds the last error is raised (one line, a stable
code: ``image_transfer_failed``, or ``image_unavailable`` when no online member holds
it; ``image_error`` "missing" when no other member ever held it: the one copy vanished).
Must not speak HTTP: the ``MemberPeers`` port does (``api.members``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from virtfleet.errors import (
    ImageError,
    ImageTransferError,
    ImageUnavailableError,
    InvalidInputError,
    OwnerUnreachableError,
    VirtfleetError,
)
from virtfleet.model.operation import Operation
from virtfleet.service.errcodes import error_from_code
from virtfleet.service.forwarding import ForwardingService, OwnerTarget
from virtfleet.service.operations import OperationRunner
from virtfleet.storage.imagefiles import ImageLocation
from virtfleet.storage.images import OCI_FORMAT, ImageStore

Report = Callable[[int, str], Awaitable[None]]  # (percent, message), as OpContext.progress
REPORT_EVERY_S = 0.25  # progress is a store write and an event: not one per chunk
FOLLOW_S = 0.5  # how often a fetch run by another host is looked at again


class MemberPeers(Protocol):
    """Requests to another member, signed with the member credential."""

    def download(
        self, host: OwnerTarget, path: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The body of ``GET path`` on ``host``, streamed; ``ImageTransferError`` if refused."""
        ...

    async def call(self, host: OwnerTarget, method: str, path: str) -> dict[str, Any]:
        """``method path`` on ``host``: its JSON answer, or its error raised as ours."""
        ...


async def _quiet(pct: int, message: str) -> None:
    return None


class ImageFetcher:
    def __init__(
        self,
        images: ImageStore,
        forwarding: ForwardingService | None,
        peers: MemberPeers | None,
        runner: OperationRunner,
    ) -> None:
        self.images = images
        self.forwarding = forwarding  # None on a daemon that is no cluster member
        self.peers = peers
        self.runner = runner
        self.here = images.files.host_id
        self._locks: dict[str, asyncio.Lock] = {}  # one fetch per image at a time here

    async def missing(self, names: list[str], host: str) -> list[str]:
        """Which of images ``names`` host ``host`` lacks the file of."""
        out = []
        for name in names:
            if host == self.here:
                held = await self.images.held_here(name)
            else:
                record = await self.images.get(name)
                held = any(x.host == host for x in await self._holders(name, record.sha256))
            if not held:
                out.append(name)
        return out

    async def ensure(self, names: list[str], host: str, report: Report = _quiet) -> None:
        """Have host ``host`` hold the files of images ``names`` (see the module docstring)."""
        for name in await self.missing(names, host):
            if host == self.here:
                await self.fetch_here(name, report)
            else:
                await self.follow(await self.ask(name, host), report)

    async def ask(self, name: str, host: str) -> Operation:
        """Have member ``host`` fetch image ``name``: its ``image.fetch`` operation."""
        if self.forwarding is None or self.peers is None:
            raise ImageUnavailableError(f"host {host} cannot be asked for images: no cluster")
        target = await self.forwarding.reach(host, f"image {name!r} is needed on")
        answer = await self.peers.call(target, "POST", f"/1.0/images/{name}/fetch")
        return Operation.model_validate(answer)

    async def follow(self, op: Operation, report: Report) -> None:
        """Wait for operation ``op`` (run by another host), passing its progress on; its
        error is raised as ours."""
        seen = (0, "")
        while True:
            if (op.progress, op.message) != seen and op.message:
                seen = (op.progress, op.message)
                await report(op.progress, op.message)  # its last one too: the bytes it got
            if op.status.done:
                break
            op = await self.runner.wait(op.id, FOLLOW_S)
        if op.error_code is not None:
            raise error_from_code(op.error_code, op.error_message or "the fetch failed")

    async def fetch_here(self, name: str, report: Report = _quiet) -> ImageLocation:
        """Stream image ``name``'s file from a holder into this host's image store."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            record = await self.images.get(name)
            if await self.images.held_here(name):  # another fetch brought it meanwhile
                held = await self.images.files.here(name, record.sha256)
                if held is not None:
                    return held
            holders = [x for x in await self._holders(name, record.sha256) if x.host != self.here]
            if not holders:  # the one copy there was (this host's) is gone: not a fetch
                raise ImageError(f"image file for {name!r} is missing: {record.path}")
            if record.format == OCI_FORMAT:
                raise InvalidInputError(
                    f"image {name!r} is an OCI image: its layers are not fetched between "
                    "hosts yet; import it on this host too"
                )
            return await self._from_any(holders, name, Path(record.path).name, report)

    async def _from_any(
        self, holders: list[ImageLocation], name: str, filename: str, report: Report
    ) -> ImageLocation:
        """The first holder's file that arrives whole; the last bad transfer's error, else
        ``ImageUnavailableError`` saying why no holder answered."""
        error: VirtfleetError | None = None
        away: list[str] = []
        for holder in holders:
            try:
                return await self._from(holder, name, filename, report)
            except OwnerUnreachableError as err:
                away.append(err.message)
            except ImageTransferError as err:
                error = err  # the next holder may have it whole
        if error is not None:
            raise error
        why = f": {'; '.join(away)}" if away else ""
        raise ImageUnavailableError(f"no online member holds image {name!r}'s file{why}")

    async def _holders(self, name: str, sha256: str) -> list[ImageLocation]:
        return await self.images.files.holders(name, sha256)

    async def _from(
        self, holder: ImageLocation, name: str, filename: str, report: Report
    ) -> ImageLocation:
        if self.forwarding is None or self.peers is None:
            raise OwnerUnreachableError(f"this host is no cluster member to fetch {name!r} from")
        target = await self.forwarding.reach(holder.host, f"image {name!r} is held by")
        throttle = _Throttle(report, f"fetching image {name} from {target.host_name}")
        async with self.peers.download(target, f"/1.0/images/{name}/file") as chunks:
            got = await self.images.files.receive(name, filename, holder, chunks, throttle)
        await throttle.final()
        return got


class _Throttle:
    """Byte progress as an operation's percent and message, at most every REPORT_EVERY_S."""

    def __init__(self, report: Report, what: str) -> None:
        self.report = report
        self.what = what
        self.last = 0.0
        self.latest = (0, 0)

    async def __call__(self, done: int, total: int) -> None:
        self.latest = (done, total)
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY_S:
            self.last = now
            await self.final()

    async def final(self) -> None:
        done, total = self.latest
        pct = done * 100 // total if total else 100
        with contextlib.suppress(VirtfleetError):  # progress is best effort
            await self.report(pct, f"{self.what}: {_mib(done)} of {_mib(total)} MiB")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


__all__ = ["ImageFetcher", "ImageTransferError", "MemberPeers"]
