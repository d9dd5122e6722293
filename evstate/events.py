"""State-change events and their log record encoding.

Format: see docs/format.md section 2 (record payload). An event is what every ``set``, ``update``
and ``delete`` appends to the log: a gap-free ``revision``, a millisecond ``timestamp``,
the ``event_type`` (``created`` / ``updated`` / ``deleted``, as in iii), ``scope``, ``key``,
and the old and new values.

Values travel inside records as their own encoded CBOR items, carried as byte strings
(``None`` when there is no value: the key did not exist, or was deleted). The store keeps
the same bytes in memory, so a write encodes a value once and replay never re-encodes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import cbor2

from evstate.values import decode_value

__all__ = [
    "CREATED",
    "DELETED",
    "EVENT_TYPE_CODES",
    "EVENT_TYPE_NAMES",
    "EXTRA_BATCH",
    "EXTRA_REASON",
    "REASON_EXPIRED",
    "RECORD_KIND_BATCH",
    "RECORD_KIND_EVENT",
    "UPDATED",
    "Event",
    "EventRecord",
    "RecordDecodeError",
    "LogEntry",
    "decode_entry",
    "encode_batch",
    "encode_record",
    "event_dict",
    "iii_event_dict",
]

# docs/format.md section 2: record kinds and event type codes.
RECORD_KIND_EVENT: Final = 1
RECORD_KIND_BATCH: Final = 2
CREATED: Final = 1
UPDATED: Final = 2
DELETED: Final = 3
EVENT_TYPE_NAMES: Final[dict[int, str]] = {
    CREATED: "created",
    UPDATED: "updated",
    DELETED: "deleted",
}
EVENT_TYPE_CODES: Final[dict[str, int]] = {v: k for k, v in EVENT_TYPE_NAMES.items()}
# docs/format.md section 2: the attributes an event may carry in its ``extra`` map.
EXTRA_BATCH: Final = "batch"
EXTRA_REASON: Final = "reason"
REASON_EXPIRED: Final = "expired"  # the value of ``reason`` on an expiry's deleted event


class RecordDecodeError(ValueError):
    """A record payload passed its checksum but does not have the record shape."""


class LogEntry(NamedTuple):
    """What one log record holds: its events, and a trigger cursor advanced with them."""

    records: list[EventRecord]
    cursor: tuple[str, int] | None


class EventRecord(NamedTuple):
    """One event as stored: values are encoded CBOR items (``None`` = no value).

    ``extra`` holds the event's optional attributes (docs/format.md section 2), ``None``
    when it has none: ``batch`` (on every event of an atomic batch but its last: the
    revision of the batch's first event), ``reason`` (``"expired"`` on the deleted event of
    a key whose time-to-live ran out).
    """

    revision: int
    timestamp: int
    type_code: int
    scope: str
    key: str
    old: bytes | None
    new: bytes | None
    extra: dict[str, Any] | None = None

    @property
    def batch_start(self) -> int | None:
        """The first revision of the batch this event is inside of (None: it ends one)."""
        extra = self.extra
        return None if extra is None else extra.get(EXTRA_BATCH)

    @property
    def reason(self) -> str | None:
        """Why the event happened when it was not a call (``"expired"``), else None."""
        extra = self.extra
        return None if extra is None else extra.get(EXTRA_REASON)

    def to_event(self) -> Event:
        """Decode the values into a public :class:`Event` (fresh objects every call)."""
        return Event(
            revision=self.revision,
            timestamp=self.timestamp,
            event_type=EVENT_TYPE_NAMES[self.type_code],
            scope=self.scope,
            key=self.key,
            old_value=None if self.old is None else decode_value(self.old),
            new_value=None if self.new is None else decode_value(self.new),
            reason=self.reason,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A state change, as the State module doc's triggers see it.

    ``message_type`` is always ``"state"``; ``event_type`` is ``"created"``, ``"updated"``
    or ``"deleted"``; ``old_value`` is ``None`` for a created key (and for a delete of a
    missing key); ``new_value`` is ``None`` for deleted. ``reason`` is ``"expired"`` on the
    deleted event of a key whose time-to-live ran out, else ``None``.
    """

    revision: int
    timestamp: int
    event_type: str
    scope: str
    key: str
    old_value: Any
    new_value: Any
    reason: str | None = None

    @property
    def message_type(self) -> str:
        """Always ``"state"``."""
        return "state"

    def to_dict(self) -> dict[str, Any]:
        """The doc's event shape plus ``revision`` and ``timestamp``."""
        return event_dict(self)

    def to_iii(self) -> dict[str, Any]:
        """The iii engine's wire event: ``type`` and ``state:<kind>``."""
        return iii_event_dict(self)


def event_dict(event: Any) -> dict[str, Any]:
    """The doc's event shape plus ``revision``, ``timestamp`` (and ``reason`` when set)."""
    return _with_reason(
        {
            "message_type": "state",
            "event_type": event.event_type,
            "scope": event.scope,
            "key": event.key,
            "old_value": event.old_value,
            "new_value": event.new_value,
            "revision": event.revision,
            "timestamp": event.timestamp,
        },
        event.reason,
    )


def iii_event_dict(event: Any) -> dict[str, Any]:
    """The iii engine's wire event of any event object (plus ``reason`` when set)."""
    shape = {"type": "state", "event_type": "state:" + event.event_type}
    shape.update(scope=event.scope, key=event.key)
    shape.update(old_value=event.old_value, new_value=event.new_value)
    return _with_reason(shape, event.reason)


def _with_reason(shape: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """``shape``, with ``reason`` added when there is one (iii consumers ignore it)."""
    if reason is not None:
        shape["reason"] = reason
    return shape


def encode_record(record: EventRecord) -> bytes:
    """Encode an event record payload (docs/format.md section 2). Never raises for valid records.

    An event without attributes is an array of 8 (kind 1 and its 7 fields); with them, of 9.
    """
    if record.extra is None:
        return cbor2.dumps([RECORD_KIND_EVENT, *record[:7]])  # type: ignore[no-any-return,unused-ignore]
    return cbor2.dumps([RECORD_KIND_EVENT, *record])  # type: ignore[no-any-return,unused-ignore]


def encode_batch(records: list[EventRecord], cursor: tuple[str, int] | None) -> bytes:
    """Encode several events (consecutive revisions) and a trigger cursor as one record.

    The record is written and checksummed as a whole, so the events and the cursor advance
    are durable together or not at all (docs/format.md section 2, kind 2).
    """
    name, revision = cursor if cursor is not None else (None, None)
    events = [list(r[:7]) if r.extra is None else list(r) for r in records]
    return cbor2.dumps([RECORD_KIND_BATCH, events, name, revision])  # type: ignore[no-any-return,unused-ignore]


def decode_entry(payload: bytes | memoryview) -> LogEntry:
    """Decode a record payload of any kind into its events and cursor.

    Raises:
        RecordDecodeError: the payload is not a well-formed record.
    """
    try:
        item = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types for bad input
        raise RecordDecodeError(f"undecodable record payload: {exc}") from None
    if type(item) is list and len(item) in (8, 9) and item[0] == RECORD_KIND_EVENT:
        return LogEntry([_event_fields(item[1:])], None)
    if type(item) is list and len(item) == 4 and item[0] == RECORD_KIND_BATCH:
        _, events, name, revision = item
        if type(events) is not list or not all(
            type(e) is list and len(e) in (7, 8) for e in events
        ):
            raise RecordDecodeError("batch record has badly shaped events")
        records = [_event_fields(e) for e in events]
        for before, after in itertools.pairwise(records):
            if after.revision != before.revision + 1:
                raise RecordDecodeError("batch record revisions are not consecutive")
        if name is None and revision is None:
            return LogEntry(records, None)
        if type(name) is not str or type(revision) is not int or revision < 0:
            raise RecordDecodeError("batch record has a bad cursor")
        return LogEntry(records, (name, revision))
    raise RecordDecodeError("record payload is not an event or batch record")


def _event_fields(item: list[object]) -> EventRecord:
    revision, timestamp, type_code, scope, key, old, new = item[:7]
    extra = _extra(item[7], revision) if len(item) == 8 else None
    if (
        type(revision) is not int
        or revision < 1
        or type(timestamp) is not int
        or type(type_code) is not int
        or type_code not in EVENT_TYPE_NAMES
        or type(scope) is not str
        or type(key) is not str
        or (old is not None and type(old) is not bytes)
        or (new is not None and type(new) is not bytes)
        or (type_code == DELETED) != (new is None)
    ):
        raise RecordDecodeError("record payload fields have the wrong types")
    return EventRecord(revision, timestamp, type_code, scope, key, old, new, extra)


def _extra(item: object, revision: object) -> dict[str, Any]:
    """Check an event's attribute map; attributes this version does not know are kept."""
    if type(item) is not dict or not all(type(name) is str for name in item):
        raise RecordDecodeError("record attributes are not a map of names")
    reason = item.get(EXTRA_REASON)
    if reason is not None and type(reason) is not str:
        raise RecordDecodeError("record attribute 'reason' is not text")
    batch = item.get(EXTRA_BATCH)
    if batch is not None and (
        type(batch) is not int or type(revision) is not int or not 1 <= batch <= revision
    ):
        raise RecordDecodeError("record attribute 'batch' is not a revision at or before its own")
    return item
