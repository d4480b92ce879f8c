"""Name rules shared by every named object (instances, images, ...). Pure."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from virtfleet.model.namecheck import NAME_PATTERN as NAME_PATTERN
from virtfleet.model.namecheck import validate_name as validate_name

# A name field: the rule is documented in the JSON schema (OpenAPI) and enforced by
# ``validate_name`` in the model's validator, which answers ``invalid_name``.
NameStr = Annotated[str, Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63})]
