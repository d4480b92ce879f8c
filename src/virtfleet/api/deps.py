"""Request plumbing shared by the route modules: the ``Services`` bundle and name checks.

Owns how a handler gets its services (``app.state.services``) and how path
names are validated (``invalid_name`` 400 before any service is called). Must
not hold business rules.
"""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import Depends, Path
from starlette.requests import HTTPConnection

from virtfleet.errors import InvalidInputError
from virtfleet.model.names import NAME_PATTERN, validate_name
from virtfleet.service import Services


# Dependencies are ``async``: FastAPI runs plain ``def`` ones in a thread pool, a thread
# hop per dependency per request for what is a dictionary lookup or a regex match.
async def get_services(conn: HTTPConnection) -> Services:
    return cast(Services, conn.app.state.services)


# Documented (OpenAPI), not enforced by FastAPI: the checks below answer in our own words.
_NAME_DOC = Path(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63})
_OP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OP_ID_DOC = Path(json_schema_extra={"pattern": f"^{_OP_ID.pattern}$"})


async def instance_name(name: Annotated[str, _NAME_DOC]) -> str:
    return validate_name(name, "instance name")


async def image_name(name: Annotated[str, _NAME_DOC]) -> str:
    return validate_name(name, "image name")


async def operation_id(op_id: Annotated[str, _OP_ID_DOC]) -> str:
    """Operation ids are short tokens (uuid4 hex): anything else is 400, not a store lookup."""
    if not _OP_ID.fullmatch(op_id):
        raise InvalidInputError(f"invalid operation id {op_id[:80]!r}")
    return op_id


ServicesDep = Annotated[Services, Depends(get_services)]
InstanceName = Annotated[str, Depends(instance_name)]
ImageName = Annotated[str, Depends(image_name)]
OperationId = Annotated[str, Depends(operation_id)]
