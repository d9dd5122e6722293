"""The recent records of a store, kept in memory for live delivery (triggers, tails).

A writer (the owner's commit path, or a follower applying what it read) appends records in
revision order; readers take a slice without a lock, because the feed is replaced, never
trimmed in place, and its ``(first revision, list)`` pair is read as one attribute. Records
older than the feed are streamed from the log source instead (catch-up after a restart).

:meth:`RecordFeed.wait` is how delivery threads sleep until something new is visible;
:meth:`RecordFeed.notify` is cheap when nobody waits (the owner calls it on every write).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from evstate.core.log_source import LogSource
from evstate.errors import HistoryCompactedError
from evstate.events import EventRecord

__all__ = ["FEED_CAPACITY", "RecordFeed"]

FEED_CAPACITY = 65_536
"""Recent records kept; the feed holds between one and two times this many."""


class RecordFeed:
    """Recent records plus the wake-ups of the threads that wait for new ones."""

    def __init__(self, first: int) -> None:
        """An empty feed whose next record will be revision ``first``."""
        # (revision of the first record, records): one attribute, so a reader gets a
        # consistent pair without a lock; the writer appends and replaces it to trim.
        self.view: tuple[int, list[EventRecord]] = (first, [])
        self._changed = threading.Condition()
        self._waiting = 0

    # ---- the writer side (one writer at a time) ------------------------------------------

    def append(self, record: EventRecord) -> None:
        """Add the next record."""
        first, records = self.view
        records.append(record)
        if len(records) > 2 * FEED_CAPACITY:  # amortized trim: keep the newer half
            self.view = (first + FEED_CAPACITY, records[FEED_CAPACITY:])

    def extend(self, batch: list[EventRecord]) -> None:
        """Add the next records."""
        first, records = self.view
        records.extend(batch)
        if len(records) > 2 * FEED_CAPACITY:
            self.view = (first + FEED_CAPACITY, records[FEED_CAPACITY:])

    def reset(self, first: int, records: list[EventRecord] | None = None) -> None:
        """Start over at revision ``first`` (a follower whose owner compacted or restarted)."""
        self.view = (first, list(records or []))

    # ---- readers ----------------------------------------------------------------------------

    def records(self, low: int, high: int, source: LogSource) -> Iterator[EventRecord]:
        """Records ``low..high``: from memory when recent, else streamed from ``source``.

        Raises:
            HistoryCompactedError: some of them are no longer retained (or went while read).
        """
        first, records = self.view
        if low >= first:
            return iter(records[low - first : high - first + 1])
        return self._catch_up(low, high, first, source)

    def _catch_up(
        self, low: int, high: int, first: int, source: LogSource
    ) -> Iterator[EventRecord]:
        expected = low
        for record in source.scan(low, min(high, first - 1)):
            if record.revision != expected:
                raise HistoryCompactedError(
                    f"revisions from {expected} are no longer retained",
                    horizon=record.revision,
                )
            expected += 1
            yield record
        if expected < min(high + 1, first):
            raise HistoryCompactedError(
                f"revisions from {expected} are no longer retained",
                horizon=source.oldest_revision(),
            )
        if high >= first:
            yield from self.records(max(expected, first), high, source)

    # ---- waiting ------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every waiter (cheap when none waits)."""
        if self._waiting:
            with self._changed:
                self._changed.notify_all()

    def wait(self, ready: Callable[[], bool], timeout: float) -> None:
        """Sleep until ``ready()`` is true, :meth:`notify` is called, or ``timeout`` passes."""
        with self._changed:
            # Count ourselves as waiting *before* the re-check, so a writer that makes an
            # event visible after it either sees us and notifies, or did so before it.
            self._waiting += 1
            try:
                if not ready():
                    self._changed.wait(timeout)
            finally:
                self._waiting -= 1
