"""The engine of a follower: a copy of the owner's state kept current from its files.

:class:`LiveLog` loads the newest valid snapshot and the records after it, then each
:meth:`LiveLog.poll` reads the new complete records of the segment the owner is writing:

- when the segment holds nothing new and a newer segment exists, the owner rolled (it seals
  a segment, fsynced, before creating the next): read what is left, then move on;
- when what comes next is gone (the owner compacted it away, or replaced a segment after a
  crash), reload from the newest snapshot and carry on from there (*resync*);
- a record that is not complete yet is not visible yet; nothing is ever truncated.

Threading: one poller at a time (``_poll_lock``); state changes happen under ``lock`` and
wake ``changed``; reads of :attr:`table` take no lock (one dict operation each, atomic under
the GIL, as in the owner's store), and a resync swaps in a whole new table at once.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from evstate.core.table import StateTable
from evstate.errors import CorruptionError, HistoryCompactedError
from evstate.events import EventRecord, LogEntry
from evstate.backends.follower.history import FollowerHistory
from evstate.backends.follower.files import Progress, SegmentTail, list_segments, newest_snapshot

__all__ = ["FEED_CAPACITY", "LiveLog"]

log = logging.getLogger("evstate")

FEED_CAPACITY = 65_536  # recent records kept for tails and follower triggers
_LOAD_ATTEMPTS = 5


class _Retry(Exception):
    """The owner's compaction moved files during a load: list them again."""


class _Gap(Exception):
    """The next record is not the next revision: what was expected is gone."""


@dataclass
class _Loaded:
    table: StateTable
    base: int
    revision: int
    timestamp: int | None
    tail: SegmentTail | None
    cursors: dict[str, int]
    kept: list[tuple[EventRecord, int, int]] = field(default_factory=list)


class LiveLog:
    """The owner's state as of :attr:`revision`, kept current by :meth:`poll`."""

    def __init__(self, directory: str, progress: Progress | None = None) -> None:
        """Load the directory's newest valid snapshot and every record after it.

        Raises:
            CorruptionError: the files are damaged (or the log no longer reaches back to any
                snapshot) in a way a load cannot get past.
        """
        self.directory = directory
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.history = FollowerHistory(directory, self.lock)
        self.table = StateTable()
        self.revision = 0
        self.timestamp: int | None = None
        self.owner_cursors: dict[str, int] = {}
        self.problem: str | None = None  # damage that stops the follower, if any
        self.closed = False
        self._tail: SegmentTail | None = None
        self._feed: builtins.list[EventRecord] = []
        self._feed_first = 1
        self._poll_lock = threading.Lock()
        self._install(self._rebuild(None, progress), initial=True)

    # ---- loading ------------------------------------------------------------------------

    def _rebuild(self, keep_after: int | None, progress: Progress | None) -> _Loaded:
        reason = ""
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                return self._load_once(keep_after, progress)
            except _Retry as exc:
                reason = str(exc)
                time.sleep(0.02 * (attempt + 1))
        raise CorruptionError(f"cannot load {self.directory}: {reason}", path=self.directory)

    def _load_once(self, keep_after: int | None, progress: Progress | None) -> _Loaded:
        snap = newest_snapshot(self.directory)
        base = snap.revision if snap else 0
        segments = list_segments(self.directory)
        starts = [i for i, (first, _) in enumerate(segments) if first <= base + 1]
        if segments and not starts:
            raise _Retry(
                f"the log starts at revision {segments[0][0]}, after the newest snapshot's "
                f"revision {base}"
            )
        table = StateTable()
        table.load(dict(snap.scopes) if snap else {})
        loaded = _Loaded(
            table,
            base,
            base,
            snap.timestamp if snap else None,
            None,
            dict(snap.cursors) if snap else {},
        )
        todo = segments[starts[-1] :] if segments else []
        total = sum(_size(path) for _, path in todo)
        done = 0
        for i, (first, path) in enumerate(todo):
            if loaded.tail is not None:
                loaded.tail.close()
                loaded.tail = None
            if first > loaded.revision + 1:
                raise CorruptionError(
                    f"revision gap: expected a segment at {loaded.revision + 1}, found {first}",
                    path=path,
                    offset=0,
                )
            try:
                loaded.tail = tail = SegmentTail(first, path)
            except FileNotFoundError:
                raise _Retry(f"segment {path} disappeared") from None
            try:
                self._replay(loaded, tail.read(), tail.first, keep_after)
            except _Gap as exc:
                raise CorruptionError(str(exc), path=path, offset=tail.offset) from None
            is_last = i == len(todo) - 1
            if tail.stalled is not None and (tail.corrupt or not is_last):
                raise CorruptionError(
                    f"{tail.stalled}, and valid data follows"
                    if tail.corrupt
                    else f"{tail.stalled} in a closed segment",
                    path=path,
                    offset=tail.offset,
                )
            done += _size(path)
            if progress is not None:
                progress(min(done, total), total)
        return loaded

    @staticmethod
    def _replay(
        loaded: _Loaded,
        entries: builtins.list[tuple[int, LogEntry]],
        segment: int,
        keep_after: int | None,
    ) -> None:
        apply = loaded.table.apply
        for offset, entry in entries:
            for record in entry.records:
                if record.revision <= loaded.revision:
                    continue
                if record.revision != loaded.revision + 1:
                    raise _Gap(
                        f"revision {record.revision} where {loaded.revision + 1} was expected"
                    )
                apply(record)
                loaded.revision = record.revision
                loaded.timestamp = record.timestamp
                if keep_after is not None and record.revision > keep_after:
                    loaded.kept.append((record, segment, offset))
            if entry.cursor is not None:
                name, cursor = entry.cursor
                loaded.cursors[name] = max(cursor, loaded.cursors.get(name, 0))

    def _install(self, loaded: _Loaded, *, initial: bool = False) -> None:
        with self.lock:
            old_tail, old_revision = self._tail, self.revision
            self.table = loaded.table  # readers switch to the new table in one step
            self.revision, self.timestamp = loaded.revision, loaded.timestamp
            self._tail = loaded.tail
            for name, cursor in loaded.cursors.items():
                self.owner_cursors[name] = max(cursor, self.owner_cursors.get(name, 0))
            self.history.head = loaded.revision
            self.history.forget_index()
            if initial or loaded.revision < old_revision:
                if not initial:
                    log.warning(
                        "evstate follower: %s went back from revision %d to %d "
                        "(the store was replaced); following the new one",
                        self.directory,
                        old_revision,
                        loaded.revision,
                    )
                self._feed, self._feed_first = [], loaded.revision + 1
            elif loaded.base > old_revision:
                # Compacted before we read it: the feed restarts after the snapshot.
                self._feed = [record for record, _, _ in loaded.kept]
                self._feed_first = loaded.base + 1
            else:
                self._feed.extend(record for record, _, _ in loaded.kept)
            self._trim_feed()
            self.changed.notify_all()
        if old_tail is not None and old_tail is not loaded.tail:
            old_tail.close()

    def _trim_feed(self) -> None:
        if len(self._feed) > 2 * FEED_CAPACITY:
            del self._feed[:FEED_CAPACITY]
            self._feed_first += FEED_CAPACITY

    def _resync(self) -> None:
        self._install(self._rebuild(self.revision, None))

    # ---- following ----------------------------------------------------------------------

    def _apply(self, entries: builtins.list[tuple[int, LogEntry]], segment: int) -> None:
        with self.lock:
            try:
                for offset, entry in entries:
                    for record in entry.records:
                        if record.revision <= self.revision:
                            continue
                        if record.revision != self.revision + 1:
                            raise _Gap(
                                f"revision {record.revision} where {self.revision + 1} was expected"
                            )
                        self.table.apply(record)
                        self.history.recorded(record, segment, offset)
                        self._feed.append(record)
                        self.revision = self.history.head = record.revision
                        self.timestamp = record.timestamp
                    if entry.cursor is not None:
                        name, cursor = entry.cursor
                        self.owner_cursors[name] = max(cursor, self.owner_cursors.get(name, 0))
            finally:
                self._trim_feed()
                self.changed.notify_all()

    def poll(self) -> bool:
        """Read whatever the owner has written since the last poll; True if anything was.

        Never raises for damage: it is kept in :attr:`problem` (and logged once), the state
        stays at the last good revision, and later polls try again.
        """
        with self._poll_lock:
            if self.closed:
                return False
            try:
                progressed = self._poll()
                self.problem = None
                return progressed
            except (CorruptionError, OSError) as exc:
                text = str(exc)
                if text != self.problem:
                    log.error("evstate follower: %s: %s", self.directory, text)
                self.problem = text
                return False

    def _poll(self) -> bool:
        progressed = False
        for _round in range(10_000):  # bounded: each round reads or moves forward
            tail = self._tail
            if tail is None:
                return self._open_first() or progressed
            try:
                entries = tail.read()
                if entries:
                    self._apply(entries, tail.first)
                    progressed = True
                    continue
                if tail.corrupt:
                    raise CorruptionError(
                        f"{tail.stalled}, and valid data follows",
                        path=tail.path,
                        offset=tail.offset,
                    )
                segments = list_segments(self.directory)
                with self.lock:
                    self.history.saw_segments(segments)
                newer = [s for s in segments if s[0] > tail.first]
                if not newer:
                    if tail.replaced():  # a crashed owner's next open re-created it
                        self._resync()
                        return True
                    return progressed
                entries = tail.read()  # sealed before the next one was created
                if entries:
                    self._apply(entries, tail.first)
                    progressed = True
                first, path = newer[0]
                if first != self.revision + 1:
                    self._resync()  # what comes next was compacted away
                    return True
                try:
                    following = SegmentTail(first, path)
                except FileNotFoundError:
                    self._resync()
                    return True
                with self.lock:
                    self._tail = following
                tail.close()
            except _Gap:
                self._resync()
                return True
        return progressed

    def _open_first(self) -> bool:
        segments = list_segments(self.directory)
        with self.lock:
            self.history.saw_segments(segments)
        candidates = [s for s in segments if s[0] <= self.revision + 1]
        if not segments:
            return False
        if not candidates:
            self._resync()
            return True
        first, path = candidates[-1]
        try:
            tail = SegmentTail(first, path)
        except FileNotFoundError:
            return False
        with self.lock:
            self._tail = tail
        return self._poll()

    # ---- reading what was followed ------------------------------------------------------

    def records(self, low: int, high: int) -> Iterator[EventRecord]:
        """Records ``low..high``: from the recent feed, else streamed from the segments.

        Raises:
            HistoryCompactedError: some of them were compacted by the owner.
        """
        with self.lock:
            first = self._feed_first
            if low >= first:
                return iter(self._feed[low - first : high - first + 1])
        oldest = self.history.oldest_revision()
        if low < oldest:
            raise HistoryCompactedError(
                f"revision {low} is before the retained history (revision {oldest})",
                horizon=oldest,
            )
        return self._catch_up(low, high, first)

    def _catch_up(self, low: int, high: int, first: int) -> Iterator[EventRecord]:
        expected = low
        for record in self.history.scan(low, min(high, first - 1)):
            if record.revision != expected:  # a segment went between listing and reading
                raise HistoryCompactedError(
                    f"revisions from {expected} were compacted while being read",
                    horizon=record.revision,
                )
            expected += 1
            yield record
        if high >= first:
            yield from self.records(max(expected, first), high)

    def wait_past(self, revision: int, timeout: float, stop: threading.Event | None) -> None:
        """Return when :attr:`revision` passes ``revision``, ``stop`` is set, or on timeout."""
        with self.changed:
            if self.revision > revision or self.closed or (stop is not None and stop.is_set()):
                return
            self.changed.wait(timeout)

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_past` (to notice a stop)."""
        with self.changed:
            self.changed.notify_all()

    def sync(self) -> None:
        """Fdatasync the segment being read (read-only descriptor); see SegmentTail.sync."""
        with self._poll_lock:  # a poll may be closing this tail
            tail = self._tail
            if tail is not None:
                tail.sync()

    def close(self) -> None:
        """Stop following and close the segment being read. Idempotent."""
        with self._poll_lock:
            with self.lock:
                self.closed = True
                tail, self._tail = self._tail, None
                self.changed.notify_all()
            if tail is not None:
                tail.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
