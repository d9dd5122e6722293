"""The commit path of a store that keeps its state in this process (a mixin of ``Store``).

One event (:meth:`CommitPath._commit`, the hot path) or several as ONE log record
(:meth:`CommitPath._append_records`, :meth:`CommitPath._commit_writes`): append to the
journal, index, apply to the table and the feed, under the store's write lock; then
:meth:`CommitPath._acknowledge` waits for the durability ``fsync`` asks for, outside it.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Sequence

from evstate.core.expirer import expiry_records
from evstate.core.feed import RecordFeed
from evstate.core.journal import History, Journal
from evstate.core.lifecycle import Clock
from evstate.core.table import StateTable
from evstate.core.writes import Write, plan_records
from evstate.events import CREATED, DELETED, UPDATED, EventRecord, encode_batch, encode_record
from evstate.values import DEADLINE_MARK, expired, with_deadline

__all__ = ["CommitPath"]

_MARK = bytes([DEADLINE_MARK])


class CommitPath:
    """Appending and applying events (see the module doc)."""

    _table: StateTable
    _source: History
    _journal: Journal | None
    _feed: RecordFeed
    _clock: Clock
    _write_lock: threading.Lock
    _revision: int
    _last_timestamp: int
    _always: bool
    _visible: int

    def _check_open(self) -> None:
        raise NotImplementedError

    def _commit(
        self,
        scope: str,
        key: str,
        old: bytes | None,
        new: bytes | None,
        ttl_ms: int | None = None,
    ) -> int:
        """Append and apply one event. Caller holds the write lock. Returns the revision.

        ``ttl_ms`` gives ``new`` the deadline ``timestamp + ttl_ms``. The single-event twin
        of :meth:`_append_records`, inlined: this is the hot path.
        """
        revision = self._revision + 1
        now = self._clock()
        timestamp = now if now > self._last_timestamp else self._last_timestamp
        if ttl_ms is not None and new is not None:
            new = with_deadline(new, timestamp + ttl_ms)
        type_code = DELETED if new is None else (CREATED if old is None else UPDATED)
        record = EventRecord(revision, timestamp, type_code, scope, key, old, new)
        segment = offset = 0
        journal = self._journal
        if journal is not None:
            # check_writable is inside append: a failed fsync refuses the write here
            segment, offset = journal.append(encode_record(record), revision)
        self._source.recorded(record, segment, offset)
        if new is None:
            self._table.remove(scope, key)
        else:
            self._table.put(scope, key, new)
        self._feed.append(record)
        self._revision = revision
        self._last_timestamp = timestamp
        if not self._always:
            self._visible = revision
        return revision

    def _current(self, scope: str, key: str) -> bytes | None:
        """The stored value of ``scope/key`` for a write (write lock held).

        A key whose deadline has passed is absent: its expiry event is committed first, so
        the log says it expired before anything else happened to it.
        """
        raw = self._table.get(scope, key)
        if raw is not None and raw[:1] == _MARK and expired(raw, self._clock()):
            self._append_records(expiry_records([(scope, key, raw)], *self._next_stamp()))
            return None
        return raw

    def _next_stamp(self) -> tuple[int, int]:
        """The next revision and timestamp (write lock held)."""
        now = self._clock()
        return self._revision + 1, now if now > self._last_timestamp else self._last_timestamp

    def _append_records(
        self, records: Sequence[EventRecord], cursor: tuple[str, int] | None = None
    ) -> None:
        """Append ``records`` (consecutive, from the next revision) as ONE log record.

        Then apply them (write lock held). Durable per ``fsync`` once acknowledged.
        """
        segment = offset = 0
        if self._journal is not None:
            if len(records) == 1 and cursor is None:
                payload = encode_record(records[0])
            else:
                payload = encode_batch(list(records), cursor)
            segment, offset = self._journal.append(
                payload, records[0].revision, records[-1].revision
            )
        for record in records:
            self._source.recorded(record, segment, offset)
        self._table.apply_all(records)
        self._feed.extend(list(records))
        self._revision = records[-1].revision
        self._last_timestamp = records[-1].timestamp
        if not self._always:
            self._visible = self._revision

    def _commit_writes(
        self,
        writes: Sequence[Write],
        cursor: tuple[str, int] | None = None,
        applied: Callable[[], None] | None = None,
    ) -> builtins.list[EventRecord]:
        """Commit ``writes`` (and a trigger cursor advance) as ONE log record.

        Every write is applied to the state current now (updates included), in order; the
        record is written and checksummed as a whole, so all of it is durable or none.
        ``applied()`` runs under the write lock once the record is in: a trigger moves its
        in-memory cursor there, so no snapshot sees the writes without the cursor move.
        Durable per ``fsync`` on return. Returns the events it made (the expiry events of
        keys found past their deadline first).
        """
        with self._write_lock:
            self._check_open()
            if self._journal is not None:
                self._journal.check_writable()
            first, timestamp = self._next_stamp()
            records = plan_records(writes, self._table.get, first, timestamp)
            if not records:
                if applied is not None:
                    applied()
                return records
            self._append_records(records, cursor)
            if applied is not None:
                applied()
        self._acknowledge(records[-1].revision)
        return records

    def _check_writable(self) -> None:
        if self._journal is not None:
            self._journal.check_writable()

    def _acknowledge(self, revision: int) -> None:
        """Wait for the durability ``fsync`` asks for, then let triggers see the write."""
        if self._always:
            journal = self._journal
            assert journal is not None
            journal.wait_durable(revision)
            durable = journal.durable_revision
            if durable > self._visible:
                self._visible = min(durable, self._revision)
        self._feed.notify()
