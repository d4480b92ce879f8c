"""Idempotency records: the first response to a request sent with an ``Idempotency-Key``.

Owns the keys ``/idempotency/{sha256}`` and their leases: a record is written
``in_progress`` on a short lease when a request is accepted, rewritten ``done``
(with the response) on a long lease when it has been answered, and removed by
revoking its lease when the request failed. Must not decide what a record
means (matching a retry, replaying a response): ``service/idempotency.py`` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from virtfleet.errors import RevisionConflictError
from virtfleet.model.event import utcnow
from virtfleet.state.keys import IDEMPOTENCY
from virtfleet.state.store import StateStore


class IdempotencyRecord(BaseModel):
    """One key's request fingerprint and, once answered, the response to replay."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    fingerprint: str  # SHA-256 of method, path, query and body
    state: Literal["in_progress", "done"] = "in_progress"
    status: int = 0
    content_type: str = ""
    body: bytes = b""
    created_at: datetime = Field(default_factory=utcnow)


class IdempotencyRepo:
    """Records under ``/idempotency/``, each on a lease of its own."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def get(self, key_hash: str) -> tuple[IdempotencyRecord, int] | None:
        """The record and its mod revision, or None."""
        kv = await self.store.get(IDEMPOTENCY + key_hash)
        if kv is None:
            return None
        return IdempotencyRecord.model_validate_json(kv.value), kv.mod_revision

    async def create(
        self, key_hash: str, record: IdempotencyRecord, ttl_s: float
    ) -> tuple[int, int] | None:
        """Write ``record`` if the key is free; return (lease, revision), or None if taken."""
        lease = await self.store.grant_lease(ttl_s)
        try:
            revision = await self.store.put(
                IDEMPOTENCY + key_hash, _dump(record), expect_revision=0, lease=lease
            )
        except RevisionConflictError:
            await self.store.revoke(lease)
            return None
        return lease, revision

    async def replace(
        self, key_hash: str, record: IdempotencyRecord, revision: int, old_lease: int, ttl_s: float
    ) -> bool:
        """Swap the record at ``revision`` for ``record`` on a new lease of ``ttl_s``.

        Return False (nothing written) if the key changed since ``revision``.
        """
        lease = await self.store.grant_lease(ttl_s)
        try:
            await self.store.put(
                IDEMPOTENCY + key_hash, _dump(record), expect_revision=revision, lease=lease
            )
        except RevisionConflictError:
            await self.store.revoke(lease)
            return False
        await self.store.revoke(old_lease)  # holds no key any more: only the lease goes
        return True

    async def drop(self, lease: int) -> None:
        """Remove the record held by ``lease`` (if it still is) by revoking the lease."""
        await self.store.revoke(lease)


def _dump(record: IdempotencyRecord) -> bytes:
    return record.model_dump_json().encode()
