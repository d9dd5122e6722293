"""Writes as data: what a trigger handler (and later a batch) asks the store to do.

A :class:`Write` is recorded when it is asked for and applied at commit, against the state
current then, so two handlers incrementing one key never lose an increment. One planner,
:func:`plan_records`, turns a list of writes into the events they make, for every store that
keeps its state in this process. :func:`encode_checked` is the one place a value is
validated, measured against ``max_value_bytes`` and encoded, for direct writes and handler
writes alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from evstate.errors import ValueTooLargeError
from evstate.events import CREATED, DELETED, UPDATED, EventRecord
from evstate.ops_apply import apply_update_ops
from evstate.values import decode_value, encode_value, json_size, validate_value

__all__ = ["Write", "check_value", "encode_checked", "plan_records"]


class Write(NamedTuple):
    """One change to make at commit.

    ``kind`` is ``"set"`` (``arg`` = the encoded value), ``"update"`` (``arg`` = parsed
    ops, applied at commit) or ``"delete"`` (``arg`` = None).
    """

    kind: str
    scope: str
    key: str
    arg: Any


def check_value(value: Any, max_value_bytes: int | None) -> None:
    """Validate ``value`` and check it against ``max_value_bytes``.

    Raises:
        InvalidValueError: not JSON data (the message names the path).
        ValueTooLargeError: its compact JSON is larger than ``max_value_bytes``
            (code ``VALUE_TOO_LARGE``).
    """
    validate_value(value)
    if max_value_bytes is not None:
        size = json_size(value)
        if size > max_value_bytes:
            raise ValueTooLargeError(
                f"value of {size} bytes exceeds the configured max_value_bytes limit of "
                f"{max_value_bytes}"
            )


def encode_checked(value: Any, max_value_bytes: int | None) -> bytes:
    """:func:`check_value`, then encode the value once (raises as it does)."""
    check_value(value, max_value_bytes)
    return encode_value(value)


def plan_records(
    writes: Sequence[Write],
    current: Callable[[str, str], bytes | None],
    first_revision: int,
    timestamp: int,
) -> list[EventRecord]:
    """The events ``writes`` make, in order, numbered from ``first_revision``.

    ``current(scope, key)`` reads the state before the first write; each write sees the
    ones before it. Call it under the store's write lock.
    """
    overlay: dict[tuple[str, str], bytes | None] = {}
    records: list[EventRecord] = []
    revision = first_revision
    for kind, scope, key, arg in writes:
        where = (scope, key)
        old = overlay[where] if where in overlay else current(scope, key)
        new: bytes | None
        if kind == "set":
            new = arg
        elif kind == "update":
            start = {} if old is None else decode_value(old)
            new = encode_value(apply_update_ops(start, arg, missing=old is None)[0])
        else:
            new = None
        type_code = DELETED if new is None else (CREATED if old is None else UPDATED)
        records.append(EventRecord(revision, timestamp, type_code, scope, key, old, new))
        overlay[where] = new
        revision += 1
    return records
