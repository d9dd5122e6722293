"""The audit half of :class:`~evstate.backends.file.store.Store`: snapshots, retention, history, PITR.

Kept apart from the write path so each file stays readable; :class:`HistoryMethods` is a
mixin that only :class:`~evstate.backends.file.store.Store` uses, and it relies on the attributes the
store sets up (declared below for the type checker).
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from evstate.config import Config, retention_limits
from evstate.core.table import StateTable
from evstate.errors import (
    HistoryCompactedError,
    InvalidRequestError,
    StoreClosedError,
)
from evstate.events import Event
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.snapshot import check_restore_target, write_restored_store
from evstate.backends.file.timeline import FileTimeline, Timeline
from evstate.core.view import StateView

__all__ = ["HistoryMethods", "check_name", "time_ms"]

log = logging.getLogger("evstate")


def check_name(what: str, name: object) -> None:
    """Raise InvalidRequestError unless ``name`` is a ``str``."""
    if type(name) is not str:
        raise InvalidRequestError(
            f"{what} must be a str, got {type(name).__name__}: {name!r}"[:200]
        )


def time_ms(when: datetime | float | int) -> int:
    """A datetime, or seconds since the epoch, in ms since the epoch."""
    if isinstance(when, datetime):
        return int(when.timestamp() * 1000)
    if isinstance(when, int | float) and not isinstance(when, bool):
        return int(when * 1000)
    raise InvalidRequestError(f"a time must be a datetime or seconds since the epoch, got {when!r}")


def _raise_compacted(revision: int, horizon: int) -> None:
    raise HistoryCompactedError(
        f"revision {revision} is before the retention horizon (revision {horizon})",
        horizon=horizon,
    )


class HistoryMethods:
    """Snapshot, retention, history and point-in-time methods of the store."""

    _config: Config
    _table: StateTable
    _log: SegmentLog | None
    _timeline: Timeline
    _write_lock: threading.Lock
    _snapshot_lock: threading.Lock
    _snapshot_revision: int
    _revision: int
    _last_timestamp: int
    _stop: threading.Event

    def _check_open(self) -> None:
        raise NotImplementedError

    # ---- snapshots and retention ----------------------------------------------------

    def snapshot(self) -> int:
        """Write a snapshot of the current state now; returns its revision.

        Writers are paused only to copy the table's dictionaries (no value is copied or
        encoded under the lock) and to seal the active segment; encoding and writing run
        outside the lock. The snapshot is durable (fsynced, renamed, directory fsynced)
        when this returns. In-memory stores have nothing to write and return the revision.
        """
        self._check_open()
        with self._snapshot_lock:
            with self._write_lock:
                revision = self._revision
                if self._log is None or revision == self._snapshot_revision:
                    return revision
                scopes = self._table.scope_map()
                cursors = self._committed_cursors()
                timestamp = self._last_timestamp
                self._log.roll_now()
            assert isinstance(self._timeline, FileTimeline)
            self._timeline.write_snapshot(revision, timestamp, scopes, cursors)
            self._snapshot_revision = revision
            return revision

    def _committed_cursors(self) -> dict[str, int]:
        raise NotImplementedError

    def _trigger_pin(self) -> int | None:
        raise NotImplementedError

    def _retention_cutoff(self) -> int:
        """Newest revision the retention policy lets go of (0: keep everything).

        Registered triggers pin what they still have to read: never past their cursors.
        """
        max_revisions, max_age = retention_limits(self._config.retention)
        head = self._revision
        cutoff = 0
        if max_revisions is not None:
            cutoff = max(cutoff, head - max_revisions)
        if max_age is not None and head:
            now = time.time_ns() // 1_000_000
            first_kept = self._timeline.first_revision_from_time(now - max_age, head)
            cutoff = max(cutoff, first_kept - 1)
        pin = self._trigger_pin()
        if pin is not None:
            cutoff = min(cutoff, pin)
        return min(cutoff, head)

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: delete history older than it allows.

        Only segments wholly older than the horizon *and* covered by a snapshot go; the
        current state and every revision from the new horizon on stay answerable. Safe to
        call while writers write. Returns what was removed and the new ``horizon_revision``.
        """
        self._check_open()
        with self._snapshot_lock:
            result = self._timeline.compact(self._retention_cutoff(), self._revision)
        result["horizon_revision"] = self._timeline.horizon()
        return result

    def _maintenance_loop(self) -> None:
        interval = self._config.save_interval_ms / 1000.0
        while not self._stop.wait(interval):
            try:
                if self._log is not None and self._revision != self._snapshot_revision:
                    self.snapshot()
                self.compact()
            except StoreClosedError:
                return
            except Exception:  # keep the store serving; the next tick tries again
                log.exception("evstate: background snapshot or compaction failed")

    def stats(self) -> dict[str, Any]:
        """Numbers about the store: revisions, keys, files, sizes, the retained range.

        Keys: ``revision``, ``durable_revision``, ``keys``, ``scopes``, ``segments``,
        ``log_bytes``, ``snapshots``, ``snapshot_bytes``, ``last_snapshot_revision``,
        ``oldest_revision`` and ``oldest_timestamp`` (the oldest retained event),
        ``horizon_revision`` (the oldest revision :meth:`at` can answer), ``index_built``.
        """
        self._check_open()
        result: dict[str, Any] = {
            "revision": self._revision,
            "durable_revision": self._log.durable_revision if self._log else self._revision,
            "keys": self._table.key_count(),
            "scopes": len(self._table.scopes()),
        }
        result.update(self._timeline.stats())
        return result

    # ---- audit and point-in-time ----------------------------------------------------

    def _check_lower_bound(self, bound: object, low: int | None, oldest: int) -> None:
        """Raise HistoryCompactedError if a lower bound asks for compacted events."""
        if low is None or oldest <= 1:
            return
        if isinstance(bound, int) and not isinstance(bound, bool):
            if low < oldest:
                _raise_compacted(low, oldest)
            return
        horizon_ms = self._timeline.horizon_timestamp()
        if horizon_ms is not None and time_ms(bound) <= horizon_ms:  # type: ignore[arg-type]
            raise HistoryCompactedError(
                f"events before {bound} were compacted (the oldest retained event is revision "
                f"{oldest})",
                horizon=oldest,
            )

    def _revision_bound(self, bound: int | datetime | None, *, low: bool) -> int | None:
        if bound is None:
            return None
        if isinstance(bound, int) and not isinstance(bound, bool):
            return bound
        ms = time_ms(bound)
        head = self._revision
        if low:
            return self._timeline.first_revision_from_time(ms, head)
        return self._timeline.revision_at_time(ms, head)

    def history(
        self,
        scope: str,
        key: str,
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        """The events of ``scope/key``, oldest first, with old and new values.

        ``since``/``until`` bound the range (inclusive): an ``int`` is a revision, a
        ``datetime`` a time. ``limit`` keeps the first ``limit`` events.

        Raises:
            HistoryCompactedError: ``since`` is before the oldest retained event.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        oldest = self._timeline.oldest_revision()
        low = self._revision_bound(since, low=True)
        self._check_lower_bound(since, low, oldest)
        high = self._revision_bound(until, low=False)
        records = self._timeline.key_records(
            scope, key, max(low or 0, oldest), self._revision if high is None else high
        )
        if limit is not None:
            records = records[: max(limit, 0)]
        return [record.to_event() for record in records]

    def events(
        self,
        start: int | datetime | None = None,
        end: int | datetime | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
    ) -> Iterator[Event]:
        """Iterate over the retained log lazily, oldest first (one segment in memory at a time).

        ``start``/``end`` bound it (inclusive): an ``int`` is a revision, a ``datetime`` a
        time. ``scope``/``key`` filter. Events appended after the call starts are not
        included.

        Raises:
            HistoryCompactedError: ``start`` is before the oldest retained event.
        """
        self._check_open()
        oldest = self._timeline.oldest_revision()
        low = self._revision_bound(start, low=True)
        self._check_lower_bound(start, low, oldest)
        high = self._revision_bound(end, low=False)
        head = self._revision if high is None else min(high, self._revision)
        return self._iter_events(max(low or 0, oldest), head, scope, key)

    def _iter_events(
        self, low: int, high: int, scope: str | None, key: str | None
    ) -> Iterator[Event]:
        for record in self._timeline.scan(low, high):
            if (scope is None or record.scope == scope) and (key is None or record.key == key):
                yield record.to_event()

    def _resolve_revision(self, revision: int | None, when: datetime | float | None) -> int:
        if revision is not None and when is not None:
            raise InvalidRequestError("give a revision or a time, not both")
        head = self._revision
        if when is not None:
            ms = time_ms(when)
            target = self._timeline.revision_at_time(ms, head)
            horizon_ms = self._timeline.horizon_timestamp()
            if (
                target < self._timeline.oldest_revision()
                and horizon_ms is not None
                and ms < horizon_ms
            ):
                horizon = self._timeline.horizon()
                raise HistoryCompactedError(
                    f"{when} is before the retention horizon (revision {horizon})",
                    horizon=horizon,
                )
            return target
        if revision is None:
            return head
        if type(revision) is not int or revision < 0:
            raise InvalidRequestError(f"revision must be an int >= 0, got {revision!r}")
        return min(revision, head)

    def at(self, revision: int | None = None, time: datetime | float | None = None) -> StateView:
        """A read-only view of the state exactly as of ``revision`` or ``time``.

        ``time`` is a ``datetime`` or seconds since the epoch; a time after the newest event
        (or a revision past the head) answers the current state. Answered online from the
        nearest snapshot at or before it plus replay; nothing is restored.

        Raises:
            HistoryCompactedError: before the retention horizon (``.horizon`` names it).
        """
        self._check_open()
        target = self._resolve_revision(revision, time)
        horizon = self._timeline.horizon()
        if target < horizon:
            _raise_compacted(target, horizon)
        scopes, stamp = self._timeline.state_and_time_at(target)
        return StateView(target, stamp, scopes, self.history)

    def restore_to(
        self,
        path: str | os.PathLike[str],
        revision: int | None = None,
        time: datetime | float | None = None,
    ) -> str:
        """Write a new, independent store directory holding the state at that point.

        The new store starts from a snapshot at that revision (so its revisions continue
        the numbering) and has its own log; it opens like any store. ``path`` must not
        exist or be empty. Returns the absolute path.

        Raises:
            HistoryCompactedError: before the retention horizon.
            StorageError: ``path`` exists and is not empty, or cannot be written.
        """
        view = self.at(revision, time)
        target = check_restore_target(path)
        return write_restored_store(target, view.revision, view.timestamp or 0, view._scopes)

    def verify(self) -> builtins.list[str]:
        """Check the store; returns the problems found (empty when healthy).

        Checks every record checksum and revision continuity, every snapshot checksum, and
        that newest snapshot + replay, a full replay from the oldest retained point and the
        live state all agree (at the revision current when the call starts).
        """
        self._check_open()
        with self._write_lock:
            head = self._revision
            live = self._table.scope_map()
        return self._timeline.verify(head, live)
