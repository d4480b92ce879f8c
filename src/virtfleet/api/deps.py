"""Request plumbing shared by the route modules: the ``Services`` bundle and name checks.

Owns how a handler gets its services (``app.state.services``) and how path
names are validated (``invalid_name`` 400 before any service is called). Must
not hold business rules.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from virtfleet.model.names import validate_name
from virtfleet.service import Services


def get_services(conn: HTTPConnection) -> Services:
    return cast(Services, conn.app.state.services)


def instance_name(name: str) -> str:
    return validate_name(name, "instance name")


def image_name(name: str) -> str:
    return validate_name(name, "image name")


ServicesDep = Annotated[Services, Depends(get_services)]
InstanceName = Annotated[str, Depends(instance_name)]
ImageName = Annotated[str, Depends(image_name)]
