"""The committed OpenAPI document (docs/openapi.json) is the one the code generates."""

from __future__ import annotations

import json
from pathlib import Path

from virtfleet.api.openapi import REFRESH, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_up_to_date() -> None:
    """Regenerate and compare; on a difference, say how to refresh the file."""
    assert DOC.exists(), f"docs/openapi.json is missing; create it with:\n    {REFRESH}"
    committed, current = json.loads(DOC.read_text()), json.loads(render())
    stale = sorted(set(committed["paths"]) ^ set(current["paths"]))
    assert committed == current, (
        "docs/openapi.json is stale (it differs from what the routes generate"
        + (f"; paths added or removed: {stale}" if stale else "")
        + f"). Refresh it with:\n    {REFRESH}"
    )


def test_document_describes_errors_and_idempotency() -> None:
    """Every operation documents the one error shape; unsafe ones take an Idempotency-Key."""
    doc = json.loads(render())
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert "default" in op["responses"] and "422" not in op["responses"], (method, path)
            names = {p["name"] for p in op.get("parameters", [])}
            assert ("Idempotency-Key" in names) == (method in ("post", "put", "patch", "delete"))
