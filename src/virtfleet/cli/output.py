"""Rendering for the CLI: JSON, Rich tables, and waiting on operations with a progress bar.

Owns how results look. Rich and the models are imported when something is drawn or
parsed, not with the module: a command that prints one line pays for neither. Must
not parse arguments or know endpoints beyond the client's ``wait_operation``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer

from virtfleet.client.calls import Call, as_raw

if TYPE_CHECKING:
    from rich.console import Console

    from virtfleet.client import Client
    from virtfleet.model.operation import Operation


def jsonable(data: Any) -> Any:
    if hasattr(data, "model_dump"):  # a pydantic model
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [jsonable(item) for item in data]
    if isinstance(data, dict):
        return {str(k): jsonable(v) for k, v in data.items()}
    return data


def print_json(data: Any) -> None:
    print(json.dumps(jsonable(data), indent=2))


def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, emoji=False)


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a plain table with ``columns`` (upper-case headers)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        # Values as Text: never read as markup or emoji (a MAC's ":ab:", a name's "[/]").
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    stdout().print(t)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """Print ``name: value`` pairs aligned, skipping empty values."""
    from rich.table import Table
    from rich.text import Text

    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for key, value in pairs:
        if value not in (None, "", []):
            t.add_row(key, Text(str(value)))
    stdout().print(t)


def run_operation(
    client: Client, op: Operation, label: str, *, as_json: bool, no_wait: bool
) -> Operation | None:
    """Wait for ``op`` (progress bar unless ``as_json``) and return it once it succeeded.

    With ``no_wait`` print the operation (id, or JSON) and return None. A failed
    operation raises its ``ApiError``.
    """
    if no_wait:
        if as_json:
            print_json(op)
        else:
            print(op.id)
        return None
    try:
        final = client.wait_operation(op.id) if as_json else _wait_with_bar(client, op, label)
    except KeyboardInterrupt:
        print(
            f"interrupted; operation {op.id} goes on (virtfleet operation show {op.id})",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    _raise_for(final)
    if as_json:
        print_json(final)
    return final


def finish(
    client: Client, call: Call[Operation], label: str, *, as_json: bool, no_wait: bool
) -> dict[str, Any] | None:
    """Send ``call`` (it answers an operation, once done if it asks the server to wait)
    and see the operation through as ``run_operation`` does; the operation as JSON.

    An operation that succeeded within the call is printed as the daemon sent it: no
    second request, and no models parsed. Otherwise ``run_operation`` takes over.
    """
    try:
        op: dict[str, Any] = client.call(as_raw(call))
    except KeyboardInterrupt:
        print(f"interrupted; {label} may go on (virtfleet operation list)", file=sys.stderr)
        raise typer.Exit(130) from None
    if op.get("status") == "success" and not no_wait:
        if as_json:
            print_json(op)
        return op
    from virtfleet.model.operation import Operation

    parsed = Operation.model_validate(op)
    if parsed.status.done and not no_wait:
        _raise_for(parsed)
    final = run_operation(client, parsed, label, as_json=as_json, no_wait=no_wait)
    return None if final is None else jsonable(final)


def _raise_for(op: Operation) -> None:
    from virtfleet.client import raise_for_operation

    raise_for_operation(op)


def _wait_with_bar(client: Client, op: Operation, label: str) -> Operation:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
    )
    with Progress(*columns, console=stderr(), transient=True) as progress:
        task = progress.add_task(label, total=100)

        def show(current: Operation) -> None:
            text = f"{label}: {current.message}" if current.message else label
            progress.update(task, completed=current.progress, description=text)

        return client.wait_operation(op.id, on_progress=show)


def done(message: str, as_json: bool) -> None:
    """Say what happened (nothing with ``--json``: the JSON says it), as plain text."""
    if not as_json:
        print(message)
