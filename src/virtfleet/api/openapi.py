"""The OpenAPI document, generated from the routes: ``python -m virtfleet.api.openapi``.

Owns printing the document as committed in docs/openapi.json
(tests/meta/test_openapi.py fails when that copy is stale), from an app built
without services: FastAPI only needs the routes to describe them. Must not
start, open or serve anything.
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from virtfleet.api.app import create_app
from virtfleet.service import Services

REFRESH = ".venv/bin/python -m virtfleet.api.openapi > docs/openapi.json"


class _NoServices:
    """Stands in for every service (and their parts): the app is built, never called."""

    def __getattr__(self, name: str) -> _NoServices:
        return self


def openapi_document() -> dict[str, Any]:
    """The document of every HTTP route, from an app without services behind it."""
    return create_app(cast(Services, _NoServices())).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
