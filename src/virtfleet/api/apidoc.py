"""What FastAPI cannot infer about the API for its OpenAPI document.

Owns amending the generated document: every operation answers errors in the
one shape (``Error``, as the ``default`` response; FastAPI's 422 validation
schema is dropped because validation answers 400) and unsafe methods take an
``Idempotency-Key`` header. Must not describe routes (they describe
themselves) nor print or serve the document (``api/openapi.py`` prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

UNSAFE = ("post", "put", "patch", "delete")
_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "status"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "status": {"type": "integer"},
            },
        }
    },
}
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retries with the same key and request get the first response (24 h).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and /openapi.json) describe errors and idempotency keys."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        doc = generate()  # FastAPI caches it: amend it once
        if not done:
            amend(doc)
            done = True
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def amend(doc: dict[str, Any]) -> None:
    """Add the error shape and the Idempotency-Key header; drop FastAPI's validation 422."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    for methods in doc.get("paths", {}).values():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422")):
                del responses["422"]
            responses["default"] = {
                "description": "An error, in the one error shape",
                "content": {"application/json": {"schema": _REF}},
            }
            if method in UNSAFE:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
