"""Argument checks every ``StateStore`` implementation shares: keys, prefixes, values,
revisions, lease ids, TTLs and transaction branches, each refused with
``InvalidInputError`` before anything is sent or written."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeGuard

from virtfleet.errors import InvalidInputError
from virtfleet.state.store import Compare, Delete, Put


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise InvalidInputError("key prefix must be a string")
    try:
        prefix.encode()
    except UnicodeEncodeError as err:
        raise InvalidInputError(f"key {prefix!r} is not valid unicode") from err


def check_key(key: object) -> None:
    check_prefix(key)
    if not key:
        raise InvalidInputError("key must not be empty")


def check_value(value: object) -> None:
    if not isinstance(value, bytes):
        raise InvalidInputError(f"value must be bytes, not {type(value).__name__}")


def check_revision(revision: object, what: str) -> None:
    if revision is not None and (not is_int(revision) or revision < 0):
        raise InvalidInputError(f"{what} must be a revision >= 0")


def check_lease_id(lease: object, *, optional: bool) -> None:
    if lease is None and optional:
        return
    if not is_int(lease) or lease <= 0:
        raise InvalidInputError("lease must be a positive lease id")


def check_ttl(ttl_s: object) -> None:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise InvalidInputError("lease ttl must be a number of seconds")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InvalidInputError("lease ttl must be a positive number of seconds")


def check_compares(compares: Sequence[Compare]) -> None:
    for compare in compares:
        if not isinstance(compare, Compare):
            raise InvalidInputError(f"not a Compare: {compare!r}")
        check_key(compare.key)
        check_revision(compare.mod_revision, "compare mod_revision")


def check_ops(ops: Sequence[Put | Delete]) -> None:
    seen: set[str] = set()
    for op in ops:
        if not isinstance(op, Put | Delete):
            raise InvalidInputError(f"not a Put or Delete: {op!r}")
        check_key(op.key)
        if op.key in seen:
            raise InvalidInputError(f"key {op.key!r} appears twice in one transaction branch")
        seen.add(op.key)
        if isinstance(op, Put):
            check_value(op.value)
            check_lease_id(op.lease, optional=True)
