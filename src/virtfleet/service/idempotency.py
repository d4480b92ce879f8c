"""Idempotency keys: a retried request gets the first response instead of running twice.

Owns the rules: a key is scoped to its principal; a retry must be the same
request (same fingerprint) or it is refused (``IdempotencyKeyReusedError``,
422); a retry while the first request still runs is refused, not queued
(``IdempotencyInProgressError``, 409: the caller retries later); an answered
request is remembered for ``ttl_s`` (24 h). Must not know HTTP: the API layer
computes the fingerprint, captures the response and replays it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from virtfleet.errors import IdempotencyInProgressError, IdempotencyKeyReusedError
from virtfleet.state.idempotency import IdempotencyRecord, IdempotencyRepo
from virtfleet.state.store import StateStore

TTL_S = 24 * 3600.0
# A request still unanswered after this long is presumed lost (e.g. the daemon died).
IN_PROGRESS_TTL_S = 120.0
_ATTEMPTS = 3


@dataclass(frozen=True)
class StoredResponse:
    """The parts of a response that are replayed: status, content type and body."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Reservation:
    """A key this request now owns; hand it back to ``finish`` or ``abandon``."""

    key_hash: str
    fingerprint: str
    lease: int
    revision: int


class IdempotencyService:
    """Reserve a key, then record the response (``finish``) or free the key (``abandon``)."""

    def __init__(
        self, store: StateStore, ttl_s: float = TTL_S, in_progress_ttl_s: float = IN_PROGRESS_TTL_S
    ) -> None:
        self._repo = IdempotencyRepo(store)
        self.ttl_s = ttl_s
        self.in_progress_ttl_s = in_progress_ttl_s

    async def begin(
        self, principal: str, key: str, fingerprint: str
    ) -> Reservation | StoredResponse:
        """Reserve ``key`` for this request, or return the response of its first use.

        Raises ``IdempotencyKeyReusedError`` if the key was first used for another
        request, ``IdempotencyInProgressError`` while that request is still running.
        """
        key_hash = scoped_key(principal, key)
        for _ in range(_ATTEMPTS):
            found = await self._repo.get(key_hash)
            if found is not None:
                return _previous(found[0], fingerprint)
            record = IdempotencyRecord(fingerprint=fingerprint)
            made = await self._repo.create(key_hash, record, self.in_progress_ttl_s)
            if made is not None:
                return Reservation(key_hash, fingerprint, *made)
        # Taken and gone again each time we looked: another request is churning on it.
        raise IdempotencyInProgressError("a request with this idempotency key is in progress")

    async def finish(self, reservation: Reservation, response: StoredResponse) -> None:
        """Remember ``response`` as the answer to the key for ``ttl_s``."""
        record = IdempotencyRecord(
            fingerprint=reservation.fingerprint,
            state="done",
            status=response.status,
            content_type=response.content_type,
            body=response.body,
        )
        await self._repo.replace(
            reservation.key_hash, record, reservation.revision, reservation.lease, self.ttl_s
        )

    async def abandon(self, reservation: Reservation) -> None:
        """Free the key (the request failed): a retry will run the request again."""
        await self._repo.drop(reservation.lease)


def scoped_key(principal: str, key: str) -> str:
    """The store key of ``key`` used by ``principal`` (a hash: keys are client-chosen text)."""
    return hashlib.sha256(f"{principal}\0{key}".encode()).hexdigest()


def _previous(record: IdempotencyRecord, fingerprint: str) -> StoredResponse:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(
            "this idempotency key was already used for a different request"
        )
    if record.state != "done":
        raise IdempotencyInProgressError(
            "a request with this idempotency key is still in progress; retry later"
        )
    return StoredResponse(record.status, record.content_type, record.body)
