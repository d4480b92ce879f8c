"""Typer's option coercion without pydantic for the values a command line mostly carries.

Typer 0.29 coerces every non-flag parameter through a pydantic ``TypeAdapter`` built
on first use: importing pydantic and building the adapters costs a command ~50 ms
before it sends anything (``--data-dir`` alone triggers it). ``install`` puts a
builder in front of Typer's (``typer.core.build_runtime_param``) that coerces what
needs no validation: a ``str`` for a ``str`` (or a ``list[str]``), an ``int`` or
``float`` default for a number without bounds, a path string for a plain ``Path``
(Typer's own path checks then run). Anything else, and every value that would fail,
goes to Typer's adapter, so results and error messages stay Typer's
(tests/unit/test_cli_lazy.py compares the two). Must not change what a value means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import typer.core
from typer._click import Context
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import coerce_cli_path

_MISS = object()


@dataclass(frozen=True)
class FastRuntimeParam(RuntimeParam):
    """Coerces the plain cases itself; hands the rest to Typer's adapter (built then)."""

    descriptor: TypeDescriptor | None = None
    _typer: list[RuntimeParam] = field(default_factory=list)  # Typer's, once built

    def _coerce_value(self, value: Any, param: Any, ctx: Context) -> Any:
        done = _plain(self.annotation, self.parameter_info, value, param, ctx)
        if done is not _MISS:
            return done
        if not self._typer:
            assert self.descriptor is not None
            self._typer.append(build_runtime_param(self.descriptor))
        return self._typer[0]._coerce_value(value, param=param, ctx=ctx)


def _plain(annotation: Any, info: Any, value: Any, param: Any, ctx: Context) -> Any:
    """``value`` coerced as Typer's adapter would, or ``_MISS`` if that needs the adapter."""
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (int, float) and type(value) in (int, float):
        unbounded = info.min is None and info.max is None and not info.clamp
        return annotation(value) if unbounded and annotation(value) == value else _MISS
    if annotation is Path and info.path_type is None and isinstance(value, str | Path):
        return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    strings = get_origin(annotation) is list and get_args(annotation) == (str,)
    if strings and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    return _MISS


def fast_runtime_param(descriptor: TypeDescriptor) -> RuntimeParam:
    """Typer's runtime parameter for ``descriptor``, with the plain cases short-cut."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None:
        return build_runtime_param(descriptor)
    return FastRuntimeParam(info, descriptor.annotation, descriptor)


def install() -> None:
    """Make Typer's parameters use ``fast_runtime_param`` (idempotent)."""
    typer.core.build_runtime_param = fast_runtime_param  # type: ignore[attr-defined]
