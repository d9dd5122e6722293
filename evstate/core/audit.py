"""The audit API every store kind shares: history, events, at, restore_to, verify.

Written once over a :class:`~evstate.core.log_source.LogSource`, so the owner of a
directory, its followers, the memory store and the redis store answer the same question the
same way, including where history was compacted:

- a lower bound (``since``, ``start``) before the oldest retained event raises
  :class:`~evstate.errors.HistoryCompactedError`: a revision below ``oldest_revision``, or a
  time at or before the horizon's event, once anything was compacted;
- ``at`` of a time before the horizon's event raises it too, as does ``at`` of a revision
  below the horizon (the log source refuses to rebuild it);
- an upper bound past the head, or a time after the newest event, means "up to now";
- ``at`` of a revision inside an atomic batch answers the state before that batch (the
  states between its events never existed for any reader).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from evstate.core.arguments import check_name, check_revision, time_ms
from evstate.core.log_source import LogSource, Progress
from evstate.core.replay import Scopes, live_scopes
from evstate.core.view import StateView
from evstate.errors import HistoryCompactedError, InvalidRequestError
from evstate.events import Event

__all__ = [
    "AuditMethods",
    "Bound",
    "RestoreWriter",
    "compacted",
]

Bound = int | datetime | None


def compacted(revision: int | str, horizon: int) -> HistoryCompactedError:
    """The error for a request before the retained history (``horizon`` names the limit)."""
    return HistoryCompactedError(
        f"revision {revision} is before the retention horizon (revision {horizon})",
        horizon=horizon,
    )


class RestoreWriter(Protocol):
    """Writes a past state as a new store directory (the file store's restore)."""

    def check_target(self, path: str | os.PathLike[str]) -> str:
        """The absolute path a restore may write (missing or empty), else StorageError."""

    def write(self, target: str, revision: int, timestamp: int, scopes: Scopes) -> str:
        """Write ``scopes`` as a store at ``revision`` into ``target``; durable on return."""


class AuditMethods:
    """``history``, ``events``, ``at``, ``restore_to`` and ``verify`` (see the module doc).

    A mixin: the store provides the log source and three hooks below.
    """

    _source: LogSource
    _restore_writer: RestoreWriter
    _clock: Callable[[], int]

    def _check_open(self) -> None:
        raise NotImplementedError

    def _audit_head(self) -> int:
        """The newest revision the audit answers for (the store's head, as it sees it)."""
        raise NotImplementedError

    def _live_state(self) -> tuple[int, Scopes]:
        """The head and the live state at it, read consistently (for :meth:`verify`)."""
        raise NotImplementedError

    # ---- bounds ---------------------------------------------------------------------

    def _lower_bound(self, bound: Bound, head: int) -> int:
        source = self._source
        oldest = source.oldest_revision()
        if bound is None:
            return oldest
        if isinstance(bound, int) and not isinstance(bound, bool):
            if bound < oldest and oldest > 1:
                raise HistoryCompactedError(
                    f"revision {bound} is before the retained history (the oldest retained "
                    f"event is revision {oldest})",
                    horizon=oldest,
                )
            return max(bound, oldest)
        ms = time_ms(bound)
        horizon_ms = source.horizon_timestamp()
        if oldest > 1 and horizon_ms is not None and ms <= horizon_ms:
            raise HistoryCompactedError(
                f"events before {bound} were compacted (the oldest retained event is revision "
                f"{oldest})",
                horizon=oldest,
            )
        return max(source.first_revision_from_time(ms, head), oldest)

    def _upper_bound(self, bound: Bound, head: int) -> int:
        if bound is None:
            return head
        if isinstance(bound, int) and not isinstance(bound, bool):
            return min(bound, head)
        return self._source.revision_at_time(time_ms(bound), head)

    def _target(self, revision: int | None, when: datetime | float | None) -> int:
        """The revision ``at``/``restore_to`` answer for (see the module doc)."""
        return self._whole_batches(self._asked_revision(revision, when))

    def _whole_batches(self, revision: int) -> int:
        """``revision``, or the revision before its batch if it falls inside one.

        The events of a batch are applied together, so the state between two of them never
        existed for any reader; ``at`` answers the newest state that did.
        """
        if revision <= 0:
            return revision
        try:
            found = next(iter(self._source.scan(revision, revision)), None)
        except HistoryCompactedError:
            return revision
        start = None if found is None else found.batch_start
        return revision if start is None else start - 1

    def _asked_revision(self, revision: int | None, when: datetime | float | None) -> int:
        if revision is not None and when is not None:
            raise InvalidRequestError("give a revision or a time, not both")
        head = self._audit_head()
        if when is not None:
            ms = time_ms(when)
            horizon_ms = self._source.horizon_timestamp()
            if horizon_ms is not None and ms < horizon_ms:
                horizon = self._source.horizon()
                raise HistoryCompactedError(
                    f"{when} is before the retention horizon (revision {horizon})",
                    horizon=horizon,
                )
            return self._source.revision_at_time(ms, head)
        if revision is None:
            return head
        return min(check_revision(revision), head)

    # ---- the API --------------------------------------------------------------------

    def history(
        self,
        scope: str,
        key: str,
        *,
        since: Bound = None,
        until: Bound = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        """The events of ``scope/key``, oldest first, with old and new values.

        ``since``/``until`` bound the range (inclusive): an ``int`` is a revision, a
        ``datetime`` a time. ``limit`` keeps the first ``limit`` events.

        Raises:
            HistoryCompactedError: ``since`` is before the oldest retained event.
            InvalidRequestError: a bad scope, key, bound or limit.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        if limit is not None:
            check_revision(limit, what="limit")
        head = self._audit_head()
        low = self._lower_bound(since, head)
        high = self._upper_bound(until, head)
        records = self._source.key_records(scope, key, low, high) if low <= high else []
        if limit is not None:
            records = records[:limit]
        return [record.to_event() for record in records]

    def events(
        self,
        start: Bound = None,
        end: Bound = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        progress: Progress | None = None,
    ) -> Iterator[Event]:
        """Iterate over the retained log lazily, oldest first, up to the head at the call.

        ``start``/``end`` bound it (inclusive): an ``int`` is a revision, a ``datetime`` a
        time. ``scope``/``key`` filter. ``progress(done, total)`` is called as it reads.

        Raises:
            HistoryCompactedError: ``start`` is before the oldest retained event (at the
                call), or the events were compacted while being read (when iterating).
        """
        self._check_open()
        for what, name in (("scope", scope), ("key", key)):
            if name is not None:
                check_name(what, name)
        head = self._audit_head()
        low = self._lower_bound(start, head)
        high = self._upper_bound(end, head)
        return self._iter_events(low, high, scope, key, progress)

    def _iter_events(
        self, low: int, high: int, scope: str | None, key: str | None, progress: Progress | None
    ) -> Iterator[Event]:
        if low > high:
            return
        for record in self._source.scan(low, high, progress):
            if (scope is None or record.scope == scope) and (key is None or record.key == key):
                yield record.to_event()

    def at(
        self,
        revision: int | None = None,
        time: datetime | float | None = None,
        *,
        progress: Progress | None = None,
    ) -> StateView:
        """A read-only view of the state exactly as of ``revision`` or ``time``.

        ``time`` is a ``datetime`` or seconds since the epoch; a time after the newest event
        (or a revision past the head) answers the current state. Answered from the nearest
        snapshot at or before it plus replay; nothing is restored. A key counts as expired
        from its deadline on: it is absent from a view as of a later time (the time asked
        for, the revision's event time, or now for the present).

        Raises:
            HistoryCompactedError: before the retention horizon (``.horizon`` names it).
            InvalidRequestError: both or a bad ``revision``/``time``.
        """
        self._check_open()
        target = self._target(revision, time)
        scopes, stamp = self._source.state_at(target, progress)
        if time is not None:
            as_of = time_ms(time)
        elif target >= self._audit_head():
            as_of = self._clock()  # the present: keys past their deadline now are gone
        else:
            as_of = stamp or 0
        return StateView(target, stamp, live_scopes(scopes, as_of), self.history)

    def restore_to(
        self,
        path: str | os.PathLike[str],
        revision: int | None = None,
        time: datetime | float | None = None,
        *,
        progress: Progress | None = None,
    ) -> str:
        """Write a new, independent store directory holding the state at that point.

        The new directory is a file store that starts from a snapshot at that revision (so
        its revisions continue the numbering); open it with :func:`evstate.open`. ``path``
        must not exist or be empty. Durable on return; returns the absolute path.

        Raises:
            HistoryCompactedError: before the retention horizon.
            StorageError: ``path`` exists and is not empty, or cannot be written.
        """
        self._check_open()
        target = self._restore_writer.check_target(path)
        view = self.at(revision, time, progress=progress)
        return self._restore_writer.write(target, view.revision, view.timestamp or 0, view._scopes)

    def verify(self, *, progress: Progress | None = None) -> builtins.list[str]:
        """Check the store; returns the problems found (empty when healthy).

        Checks every record checksum (or stream entry) and revision continuity, every
        snapshot, and that the newest snapshot + replay, a full replay from the oldest
        retained point and the live state all agree, at the head when the call starts.
        """
        self._check_open()
        head, live = self._live_state()
        return self._source.verify(head, live, progress)

    def _audit_stats(self) -> dict[str, Any]:
        """The log source's numbers (the backends add theirs to these)."""
        return self._source.stats()
