"""ETags of instances and the ``If-Match`` request header (RFC 9110 sections 8.8.3 and 13.1.1).

Owns the wire form of an instance ``Version``: the strong ETag
``"<spec revision>-<desired revision>"`` (store revisions, so equal ETags mean
the same writes), and parsing ``If-Match`` into the versions a change accepts:
absent or ``*`` is unconditional; a list of ETags accepts any of them; weak or
malformed entries match nothing (strong comparison). Must not check or claim
anything: ``service/preconditions.py`` does, atomically with the write.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header

from virtfleet.service.preconditions import IfMatch, Version

_ETAG = re.compile(r'"(\d{1,19})-(\d{1,19})"')
MAX_IF_MATCH_CHARS = 4096


def etag_of(version: Version) -> str:
    return f'"{version.spec_revision}-{version.desired_revision}"'


def parse_if_match(value: str | None) -> IfMatch:
    """The versions an ``If-Match`` value accepts (None: any, as without the header)."""
    if value is None or value.strip() == "*":
        return None
    versions = set()
    for entry in value[:MAX_IF_MATCH_CHARS].split(","):
        found = _ETAG.fullmatch(entry.strip())
        if found:
            versions.add(Version(int(found[1]), int(found[2])))
    return frozenset(versions)


async def if_match_header(
    if_match: Annotated[
        str | None,
        Header(description='Only act if the instance still has one of these ETags (or "*": any).'),
    ] = None,
) -> IfMatch:
    return parse_if_match(if_match)


IfMatchDep = Annotated[IfMatch, Depends(if_match_header)]
