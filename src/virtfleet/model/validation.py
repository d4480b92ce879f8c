"""One line for pydantic validation errors: what the API answers for a bad request body
and what a service raises when a model built from user input does not validate.
Nothing here knows HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from virtfleet.errors import InvalidInputError

_LOC_SKIP = ("body", "query", "path", "header")


def validation_message(errors: Sequence[Any]) -> str:
    """One line for a list of pydantic/FastAPI validation errors, naming the first field."""
    if not errors:
        return "invalid input"
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in _LOC_SKIP)
    kind, msg = first.get("type", ""), str(first.get("msg", "invalid"))
    if kind == "json_invalid":
        text = f"malformed JSON body: {first.get('ctx', {}).get('error', msg)}"
    elif kind == "extra_forbidden":
        text = f"unknown field {field!r}"
    elif kind == "missing":
        text = f"missing field {field!r}"
    else:
        msg = msg.removeprefix("Value error, ")
        text = f"{field}: {msg}" if field else msg
    more = len(errors) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return " ".join(text.split())


def invalid_input(err: ValidationError) -> InvalidInputError:
    """``err`` as the platform's ``invalid_input`` error (400), its first problem named."""
    return InvalidInputError(validation_message(err.errors()))
