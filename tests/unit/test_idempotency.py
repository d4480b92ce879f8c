"""Idempotency keys in isolation: key checks, fingerprints, and the record life cycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.api.idempotency import check_key, default_principal, fingerprint
from virtfleet.errors import (
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InvalidInputError,
)
from virtfleet.model.auth import Principal, Role
from virtfleet.service.idempotency import IdempotencyService, Reservation, StoredResponse
from virtfleet.state.keys import IDEMPOTENCY
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore

RESPONSE = StoredResponse(202, "application/json", b'{"id": "op"}')


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """Both local stores: records and their leases must behave the same on each."""
    s: StateStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "db")
    yield s
    await s.close()


def scope(
    method: str = "POST", path: str = "/1.0/instances", query: bytes = b""
) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


@pytest.mark.parametrize("key", ["a", "k" * 255, "2f1c-uuid ~!", " spaced "])
def test_valid_keys_pass(key: str) -> None:
    """Printable ASCII of 1-255 characters is a key."""
    assert check_key([key.encode()]) == key


@pytest.mark.parametrize("raw", [b"", b"k" * 256, b"a\x00", b"a\nb", b"\x1b[0m", b"\xff", b"a\x7f"])
def test_invalid_keys_are_input_errors(raw: bytes) -> None:
    """Empty, too long, control or non-ASCII characters: 400, before anything is recorded."""
    with pytest.raises(InvalidInputError):
        check_key([raw])


def test_more_than_one_key_header_is_an_input_error() -> None:
    with pytest.raises(InvalidInputError):
        check_key([b"a", b"a"])


def test_fingerprint_covers_method_path_query_and_body() -> None:
    """Any difference in method, path, query or body gives another fingerprint."""
    base = fingerprint(scope(), b'{"a": 1}')
    assert fingerprint(scope("PUT"), b'{"a": 1}') != base
    assert fingerprint(scope(path="/1.0/images"), b'{"a": 1}') != base
    assert fingerprint(scope(query=b"force=true"), b'{"a": 1}') != base
    assert fingerprint(scope(), b'{"a": 2}') != base


def test_fingerprint_of_json_is_canonical() -> None:
    """Key order and whitespace do not matter in JSON; non-JSON bodies hash as bytes."""
    assert fingerprint(scope(), b'{"a":1,"b":[1,2]}') == fingerprint(
        scope(), b'{ "b": [1, 2], "a": 1 }'
    )
    assert fingerprint(scope(), b"not json") != fingerprint(scope(), b"not  json")


def test_principal_comes_from_the_request_state_then_the_credentials() -> None:
    """Keys are scoped to the authenticated user, else to the credential, else shared (local)."""
    alice = Principal(username="alice", role=Role.ADMIN, via="token")
    assert default_principal({**scope(), "state": {"principal": alice}}) == "user:alice"
    with_auth = {**scope(), "headers": [(b"authorization", b"Bearer x")]}
    assert default_principal(with_auth).startswith("credential:")
    assert "Bearer" not in default_principal(with_auth)
    assert default_principal(scope()) == ""


async def test_first_use_reserves_and_a_retry_replays(store: StateStore) -> None:
    """begin -> finish; the same request again gets the stored response."""
    service = IdempotencyService(store)
    reservation = await service.begin("p", "k", "fp")
    assert isinstance(reservation, Reservation)
    await service.finish(reservation, RESPONSE)
    assert await service.begin("p", "k", "fp") == RESPONSE


async def test_retry_in_progress_and_reuse_are_refused(store: StateStore) -> None:
    service = IdempotencyService(store)
    await service.begin("p", "k", "fp")
    with pytest.raises(IdempotencyInProgressError):
        await service.begin("p", "k", "fp")
    with pytest.raises(IdempotencyKeyReusedError):
        await service.begin("p", "k", "other")


async def test_keys_are_scoped_to_the_principal(store: StateStore) -> None:
    """Two principals using the same key do not see each other's requests."""
    service = IdempotencyService(store)
    first = await service.begin("alice", "k", "fp")
    assert isinstance(first, Reservation)
    await service.finish(first, RESPONSE)
    assert isinstance(await service.begin("bob", "k", "other"), Reservation)


async def test_abandon_frees_the_key(store: StateStore) -> None:
    service = IdempotencyService(store)
    first = await service.begin("p", "k", "fp")
    assert isinstance(first, Reservation)
    await service.abandon(first)
    assert await store.list(IDEMPOTENCY) == []
    assert isinstance(await service.begin("p", "k", "fp"), Reservation)


async def test_concurrent_first_uses_reserve_once(store: StateStore) -> None:
    """Of simultaneous first uses exactly one owns the key (compare-and-swap on creation)."""
    service = IdempotencyService(store)
    results = await asyncio.gather(
        *(service.begin("p", "k", "fp") for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, Reservation) for r in results) == 1
    assert all(isinstance(r, Reservation | IdempotencyInProgressError) for r in results)


async def test_records_expire_with_their_lease(store: StateStore) -> None:
    """A finished record goes after ``ttl_s``; a lost in-progress one after its shorter TTL."""
    service = IdempotencyService(store, ttl_s=0.2, in_progress_ttl_s=0.1)
    done = await service.begin("p", "done", "fp")
    assert isinstance(done, Reservation)
    await service.finish(done, RESPONSE)
    await service.begin("p", "lost", "fp")
    await asyncio.sleep(0.15)
    assert len(await store.list(IDEMPOTENCY)) == 1  # only the finished one is left
    await asyncio.sleep(0.15)
    assert await store.list(IDEMPOTENCY) == []


async def test_finish_after_the_key_was_taken_over_keeps_the_new_owner(store: StateStore) -> None:
    """A request slower than its in-progress lease cannot overwrite the key's next owner."""
    service = IdempotencyService(store, in_progress_ttl_s=0.05)
    slow = await service.begin("p", "k", "fp")
    assert isinstance(slow, Reservation)
    await asyncio.sleep(0.1)
    fresh = await service.begin("p", "k", "fp")
    assert isinstance(fresh, Reservation)
    await service.finish(slow, RESPONSE)
    with pytest.raises(IdempotencyInProgressError):
        await service.begin("p", "k", "fp")
