"""Writes as data: what a batch or a trigger handler asks the store to do.

A :class:`Write` is recorded when it is asked for and applied at commit, against the state
current then, so two handlers incrementing one key never lose an increment. One planner,
:func:`plan_records`, turns a list of writes into the events they make, for every store
kind (the redis store plans with it too, then commits the result in one script).
:func:`encode_checked` is the one place a value is validated, measured against
``max_value_bytes`` and encoded, for direct writes, batches and handler writes alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from evstate.errors import CompareFailedError, InvalidRequestError, ValueTooLargeError
from evstate.events import (
    CREATED,
    DELETED,
    EXTRA_BATCH,
    EXTRA_REASON,
    REASON_EXPIRED,
    UPDATED,
    EventRecord,
)
from evstate.ops_apply import apply_update_ops
from evstate.values import (
    deadline_of,
    decode_value,
    encode_value,
    expired,
    json_equal,
    json_size,
    validate_value,
    with_deadline,
)

__all__ = [
    "MAX_TTL_MS",
    "Write",
    "check_ttl",
    "check_value",
    "encode_checked",
    "expected_matches",
    "expiry_records",
    "keep_deadline",
    "plan_records",
    "update_result",
]

MAX_TTL_MS = 100 * 365 * 86_400_000  # a century: beyond it a deadline means nothing


class Write(NamedTuple):
    """One change to make at commit.

    ``kind`` is ``"set"`` (``arg`` = the encoded value), ``"update"`` (``arg`` = parsed
    ops, applied at commit), ``"delete"`` (``arg`` = None) or ``"cas"`` (``arg`` =
    ``(expected, encoded new value)``, ``expected`` ``None`` for "only if absent").
    ``ttl_ms`` (set and cas) gives the key a deadline that long after the commit.
    """

    kind: str
    scope: str
    key: str
    arg: Any
    ttl_ms: int | None = None


def check_ttl(ttl_ms: object) -> int:
    """``ttl_ms`` if it is a positive ``int`` (not a bool) of at most a century.

    Raises:
        InvalidRequestError: anything else (nothing is written).
    """
    if type(ttl_ms) is not int or not 0 < ttl_ms <= MAX_TTL_MS:
        raise InvalidRequestError(
            f"ttl_ms must be a positive integer of milliseconds (at most {MAX_TTL_MS}), "
            f"got {ttl_ms!r}"[:200]
        )
    return ttl_ms


def keep_deadline(old: bytes | None, new: bytes) -> bytes:
    """``new`` with the deadline ``old`` has, if any (``update`` keeps a key's TTL)."""
    deadline = None if old is None else deadline_of(old)
    return new if deadline is None else with_deadline(new, deadline)


def expiry_records(
    due: Sequence[tuple[str, str, bytes]], first_revision: int, timestamp: int
) -> list[EventRecord]:
    """The ``deleted`` events (``reason: "expired"``) of keys past their deadline."""
    reason = {EXTRA_REASON: REASON_EXPIRED}
    return [
        EventRecord(first_revision + i, timestamp, DELETED, scope, key, old, None, reason)
        for i, (scope, key, old) in enumerate(due)
    ]


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


def expected_matches(old: bytes | None, expected: Any, expected_encoded: bytes | None) -> bool:
    """Tell whether the stored ``old`` equals ``expected`` (compare-and-set's test).

    ``expected`` ``None`` matches only a missing key. Otherwise the values must be equal as
    JSON data (:func:`~evstate.values.json_equal`); ``expected_encoded`` (its CBOR, when
    the caller has it) decides the common case without decoding ``old``.
    """
    if expected is None:
        return old is None
    if old is None:
        return False
    if expected_encoded is not None and old == expected_encoded:
        return True
    return json_equal(decode_value(old), expected)


def plan_records(
    writes: Sequence[Write],
    current: Callable[[str, str], bytes | None],
    first_revision: int,
    timestamp: int,
) -> list[EventRecord]:
    """The events ``writes`` make, in order, numbered from ``first_revision``.

    ``current(scope, key)`` reads the stored value before the first write; each write sees
    the ones before it. Call it under the store's write lock. A key found past its deadline
    (at ``timestamp``) is absent: its expiry event comes first. When there are several
    events, each but the last carries the ``batch`` attribute (the first revision), so
    history readers know where the atomic unit ends.

    Raises:
        CompareFailedError: a ``cas`` write found another value (nothing is planned).
    """
    overlay: dict[tuple[str, str], bytes | None] = {}
    records: list[EventRecord] = []
    for index, (kind, scope, key, arg, ttl_ms) in enumerate(writes):
        where = (scope, key)
        if where in overlay:
            old = overlay[where]
        else:
            old = current(scope, key)
            if old is not None and expired(old, timestamp):
                records += expiry_records(
                    [(scope, key, old)], first_revision + len(records), timestamp
                )
                old = None
        new: bytes | None
        if kind == "set":
            new = arg
        elif kind == "update":
            start = {} if old is None else decode_value(old)
            new = keep_deadline(
                old, encode_value(apply_update_ops(start, arg, missing=old is None)[0])
            )
        elif kind == "cas":
            expected, new = arg
            if not expected_matches(old, expected, None):
                raise CompareFailedError(
                    f"CAS_FAILED: change {index} of the batch: {scope}/{key} does not hold the "
                    "expected value; nothing was written",
                    index=index,
                    scope=scope,
                    key=key,
                    current=None if old is None else decode_value(old),
                )
        else:
            new = None
        if new is not None and ttl_ms is not None:
            new = with_deadline(new, timestamp + ttl_ms)
        type_code = DELETED if new is None else (CREATED if old is None else UPDATED)
        revision = first_revision + len(records)
        records.append(EventRecord(revision, timestamp, type_code, scope, key, old, new))
        overlay[where] = new
    if len(records) > 1:
        mark = {EXTRA_BATCH: first_revision}
        records[:-1] = [
            record._replace(extra={**(record.extra or {}), **mark}) for record in records[:-1]
        ]
    return records


def update_result(old_value: Any, new_value: Any, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``update`` answers, on every store kind.

    ``old_value`` (None when the key was missing), ``new_value``, and ``errors`` (iii's
    per-op errors) only when an op failed.
    """
    result: dict[str, Any] = {"old_value": old_value, "new_value": new_value}
    if errors:
        result["errors"] = errors
    return result
