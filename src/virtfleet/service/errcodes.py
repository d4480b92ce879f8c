"""Map a stable error ``code`` (as the agent records it in ``InstanceStatus``) back to its class.

Owns only the code -> class table built once from the ``virtfleet.errors`` tree;
must not define new error classes (those belong in errors.py).
"""

from __future__ import annotations

from functools import cache

from virtfleet.errors import VirtfleetError


@cache
def error_classes() -> dict[str, type[VirtfleetError]]:
    """Every class of the error tree by its ``code`` (the base class answers ``internal``)."""
    table: dict[str, type[VirtfleetError]] = {}
    pending: list[type[VirtfleetError]] = [VirtfleetError]
    while pending:
        cls = pending.pop()
        table.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return table


def error_from_code(code: str, message: str) -> VirtfleetError:
    """An instance of the class registered for ``code`` (``VirtfleetError`` if unknown).

    Built without the subclass constructor, whose signature may differ
    (``InvalidStateError(state, required)``): the recorded message is kept verbatim.
    """
    cls = error_classes().get(code, VirtfleetError)
    err = cls.__new__(cls)
    VirtfleetError.__init__(err, message)
    if cls is VirtfleetError and code != VirtfleetError.code:
        err.details["code"] = code
    return err
