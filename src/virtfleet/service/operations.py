"""The operations runner: slow work as persisted, pollable, cancellable ``Operation`` records.

Owns the life cycle of every ``Operation`` (pending -> running -> success / failure /
cancelled), its persistence under ``/operations/`` and the per-target ordering:
operations on one target run strictly one after another in submission order,
operations on different targets run in parallel, and nothing ever fails for
waiting (queue, don't fail). The order is held in the store, not in this process:
each operation queues a lease-backed claim on its target (state/locks.py), so
runners of several daemons on one store take turns too, and a dead daemon's
claims go with its lease. Each operation records its owning host; on start a
runner fails only its own host's interrupted operations, never another's.
Must not know what the work does: the work is a coroutine function handed to
``submit``; undo of half-done work is that function's business (try/finally or
``AsyncExitStack``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from virtfleet.errors import CancelledError_, InvalidStateError, NotFoundError, VirtfleetError
from virtfleet.model.event import Event, utcnow
from virtfleet.model.operation import Operation, OperationStatus
from virtfleet.service.waiting import wait_until
from virtfleet.state.bulk import delete_keys
from virtfleet.state.keys import OPERATIONS
from virtfleet.state.locks import LOCAL_HOST, Claims, Session
from virtfleet.state.repos import EventLog, operation_repo
from virtfleet.state.store import Put, StateStore

log = logging.getLogger(__name__)

OpFn = Callable[["OpContext"], Awaitable[dict[str, Any]]]
INTERRUPTED = "interrupted by daemon restart"
SHUTDOWN = "interrupted by daemon shutdown"
MAX_FINISHED = 1000  # finished operations kept in the store; older ones are pruned
_ACTIVE = (OperationStatus.PENDING, OperationStatus.RUNNING)


class OpContext:
    """What a running operation's function may use: its id, its target and progress reports."""

    def __init__(self, runner: OperationRunner, op: Operation) -> None:
        self._runner = runner
        self._op = op

    @property
    def id(self) -> str:
        return self._op.id

    @property
    def target(self) -> str:
        return self._op.target

    async def progress(self, pct: int, message: str = "") -> None:
        """Record progress (clamped to 0-100) and append an ``operation.progress`` event."""
        await self._runner._progress(self._op, max(0, min(100, pct)), message)


class OperationRunner:
    """Runs operations in-process, one queue per target; every change is written to the store."""

    def __init__(
        self,
        store: StateStore,
        events: EventLog,
        *,
        host_id: str = LOCAL_HOST,
        session: Session | None = None,
    ) -> None:
        self._store = store
        self._repo = operation_repo(store)
        self._events = events
        self._host = host_id
        self._session = session or Session(store)
        self._owns_session = session is None
        self._claims = Claims(store, self._session, "operations", host_id)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ops: dict[str, Operation] = {}  # the records of ``_tasks``, as last saved
        self._ended: dict[str, asyncio.Event] = {}  # set once an operation's outcome is known
        self._closing = False
        self._submitted = 0

    async def recover(self) -> int:
        """Mark operations a previous daemon of this host left pending/running as failed
        (another host's are its own business); return how many."""
        count = 0
        for op in await self.list():
            mine = op.host in (self._host, "")
            if mine and op.status in _ACTIVE and op.id not in self._tasks:
                self._fail(op, VirtfleetError(INTERRUPTED), OperationStatus.FAILURE)
                await self._save(op)
                await self._claims.release(self._claim_key(op))  # its turn ends with it
                count += 1
        return count

    async def submit(self, kind: str, target: str, fn: OpFn, message: str = "") -> Operation:
        """Persist the operation and queue ``fn`` behind earlier work on ``target`` (of any
        daemon on the store): pending if there is any, else running at once. ``message``:
        what it does, shown until its first progress report."""
        op_id = uuid.uuid4().hex
        claim = await self._claims.ask(target, ticket=op_id)  # the place in line
        first = await self._claims.first(claim)
        status = OperationStatus.RUNNING if first else OperationStatus.PENDING
        op = Operation(
            id=op_id, kind=kind, target=target, host=self._host, status=status, message=message
        )
        try:
            await self._save(op)
        except BaseException:
            await self._claims.release(claim)
            raise
        task = asyncio.create_task(self._run(op, fn, claim), name=f"op-{kind}-{op.id[:8]}")
        self._tasks[op.id] = task
        self._ops[op.id] = op
        self._ended[op.id] = asyncio.Event()
        task.add_done_callback(lambda t: self._forget(op, t))
        await self.counted()
        return op.model_copy()

    def _claim_key(self, op: Operation) -> str:
        return f"{self._claims.prefix(op.target)}{op.id}"

    async def counted(self) -> None:
        """Count one more stored operation (a caller that committed a ``finished`` one
        calls it too): every 100th prunes the oldest finished ones."""
        self._submitted += 1
        if self._submitted % 100 == 0:
            await self._prune()

    def finished(self, kind: str, target: str, result: dict[str, Any]) -> tuple[Operation, Put]:
        """An operation that is done as it is made (nothing left to run) and the write that
        records it, for the caller's own commit (one commit instead of two). Only when
        ``idle(target)``: else ``submit``, so it takes its turn behind the queued work."""
        now = utcnow()
        op = Operation(
            id=uuid.uuid4().hex,
            kind=kind,
            target=target,
            host=self._host,
            status=OperationStatus.SUCCESS,
            progress=100,
            result=result,
            created_at=now,
            updated_at=now,
        )
        return op, self._repo.put_of(op.id, op)

    async def idle(self, target: str) -> bool:
        """Whether no operation is queued or running on ``target`` (on any daemon)."""
        return await self._store.count(self._claims.prefix(target)) == 0

    def active(self, op_id: str) -> bool:
        """Whether operation ``op_id`` is queued or running in this process."""
        return op_id in self._tasks

    async def get(self, op_id: str) -> Operation:
        """The operation (as run here, else as stored); ``NotFoundError`` if unknown."""
        if (mine := self._ops.get(op_id)) is not None:
            return mine.model_copy()  # never older than its record (saved just after)
        found = await self._repo.get_raw(op_id)
        if found is None:
            raise NotFoundError(f"operation {op_id!r} not found")
        op = found[0]
        assert isinstance(op, Operation)
        return op

    async def list(self) -> builtins.list[Operation]:
        """Every stored operation, oldest first."""
        ops = {op.id: op for op in await self._repo.values() if isinstance(op, Operation)}
        ops.update({op_id: op.model_copy() for op_id, op in self._ops.items()})
        return sorted(ops.values(), key=lambda op: op.created_at)

    async def wait(self, op_id: str, timeout_s: float) -> Operation:
        """Wait up to ``timeout_s`` for the operation to finish; return it, done or not."""
        op, ended = self._ops.get(op_id), self._ended.get(op_id)
        if op is not None and ended is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout_s)):
                    await ended.wait()
            # Ended here: its final record, not read back (saved right after this answer).
            return op.model_copy() if op.status.done else await self.get(op_id)
        return await self._wait_stored(op_id, timeout_s)

    async def cancel(self, op_id: str) -> Operation:
        """Cancel a pending or running operation and return it once it has stopped.

        Cancelling a finished operation raises ``InvalidStateError``.
        """
        op = await self.get(op_id)
        task = self._tasks.get(op_id)
        if op.status.done or task is None:
            raise InvalidStateError(op.status.value, ["pending", "running"], what="operation")
        task.cancel()
        await asyncio.wait([task])
        cancelled = CancelledError_("operation cancelled")
        return await self._settle(op_id, cancelled, OperationStatus.CANCELLED)

    async def close(self) -> None:
        """Stop every operation still queued or running (daemon shutdown): each is recorded
        as failed ("interrupted by daemon shutdown"), its function's undo having run."""
        self._closing = True
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values())
        for op_id in tasks:
            with contextlib.suppress(VirtfleetError):
                await self._settle(op_id, VirtfleetError(SHUTDOWN), OperationStatus.FAILURE)
        if self._owns_session:
            await self._session.close()

    async def _settle(self, op_id: str, err: VirtfleetError, status: OperationStatus) -> Operation:
        """The stopped operation as stored. A task cancelled before its first step never
        runs its body (so never records its end): such an operation is recorded here."""
        op = await self.get(op_id)
        if not op.status.done:
            self._fail(op, err, status)
            await self._save(op)
        await self._claims.release(self._claim_key(op))  # its body may never have run
        return op

    async def _run(self, op: Operation, fn: OpFn, claim: str) -> None:
        try:
            await self._turn(op, claim)
            op.result = await fn(OpContext(self, op))
            op.status, op.progress = OperationStatus.SUCCESS, 100
        except asyncio.CancelledError:
            if self._closing:
                self._fail(op, VirtfleetError(SHUTDOWN), OperationStatus.FAILURE)
            else:
                self._fail(op, CancelledError_("operation cancelled"), OperationStatus.CANCELLED)
        except VirtfleetError as err:
            self._fail(op, err, OperationStatus.FAILURE)
        except Exception as err:
            log.exception("operation %s (%s on %s) failed", op.id, op.kind, op.target)
            line = (str(err).splitlines() or [""])[0]
            self._fail(
                op,
                VirtfleetError(f"{type(err).__name__}: {line}".rstrip(": ")),
                OperationStatus.FAILURE,
            )
        await self._claims.release(claim)  # the next in line may start
        self._ended[op.id].set()
        # Waiters answer first; the record is saved right after, in the same pass of the
        # loop (before it reads any new request, so nobody can see it unsaved).
        try:
            await asyncio.sleep(0)
        finally:
            await self._save(op)  # also when shutdown cancels us just now

    async def _turn(self, op: Operation, claim: str) -> None:
        """Wait until the operations before this one on its target have ended."""
        if op.status == OperationStatus.PENDING:
            await self._claims.wait(claim)
            op.status = OperationStatus.RUNNING
            await self._save(op)

    async def _prune(self) -> None:
        finished = [op for op in await self.list() if op.status.done]
        old = finished[: max(0, len(finished) - MAX_FINISHED)]
        # batched commits, not one per operation (a 100-write stall every 100 creates)
        await delete_keys(self._store, [OPERATIONS + op.id for op in old])

    @staticmethod
    def _fail(op: Operation, err: VirtfleetError, status: OperationStatus) -> None:
        op.status, op.error_code, op.error_message = status, err.code, err.message
        op.message = err.message

    async def _progress(self, op: Operation, pct: int, message: str) -> None:
        if op.status.done:  # a late report from a builder thread must not rewrite the result
            return
        op.progress, op.message = pct, message
        await self._save(op)
        await self._events.append(
            Event(
                kind="operation.progress",
                target=op.target,
                message=message,
                data={"operation": op.id, "kind": op.kind, "progress": pct},
            )
        )

    async def _save(self, op: Operation) -> None:
        op.updated_at = utcnow()
        await self._repo.put(op.id, op)

    def _forget(self, op: Operation, task: asyncio.Task[None]) -> None:
        self._tasks.pop(op.id, None)
        self._ops.pop(op.id, None)
        self._ended.pop(op.id, None)

    async def _wait_stored(self, op_id: str, timeout_s: float) -> Operation:
        """Wait through the store's watch for an operation run elsewhere (another daemon)."""

        async def finished() -> Operation | None:
            op = await self.get(op_id)
            return op if op.status.done else None

        done = await wait_until(self._store, OPERATIONS + op_id, finished, timeout_s)
        return done if done is not None else await self.get(op_id)
