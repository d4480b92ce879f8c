"""The rule every object name follows (instances, images, ...). Pure, and free of pydantic:
the client checks names before they become URL segments without importing the models.
``model.names`` re-exports it with the pydantic field type."""

from __future__ import annotations

import re

from virtfleet.errors import InvalidNameError

# A DNS label in ASCII: safe as a hostname, a file name and a URL segment.
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_PATTERN = _NAME_RE.pattern


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid object name, else raise ``InvalidNameError``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise InvalidNameError(
            f"invalid {what} {shown}: use 1-63 lowercase ASCII letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name
