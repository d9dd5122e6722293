"""The engine of a follower: a copy of the owner's state kept current from its files.

:class:`LiveLog` loads the newest valid snapshot and the records after it, then each
:meth:`LiveLog.poll` reads the new complete records of the segment the owner is writing:

- when the segment holds nothing new and a newer segment exists, the owner rolled (it seals
  a segment, fsynced, before creating the next): read what is left, then move on;
- when what comes next is gone (the owner compacted it away, or replaced a segment after a
  crash), reload from the newest snapshot and carry on from there (*resync*);
- a record that is not complete yet is not visible yet; nothing is ever truncated.

Threading: one poller at a time (``_poll_lock``); state changes happen under ``lock`` and
wake the feed's waiters; reads of :attr:`table` take no lock (one dict operation each,
atomic under the GIL, as in the owner's store), and a resync swaps in a whole new table at
once. History (``history``, ``at()``, ``verify``) is the file store's own
:class:`~evstate.backends.file.timeline.FileTimeline` over the owner's files.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.segment import list_segments
from evstate.backends.file.timeline import FileTimeline, file_size
from evstate.backends.follower.tail import SegmentTail, newest_snapshot
from evstate.core.feed import RecordFeed
from evstate.core.log_source import Progress
from evstate.core.table import StateTable
from evstate.errors import CorruptionError
from evstate.events import EventRecord, LogEntry

__all__ = ["LiveLog", "OwnerCursors", "owner_cursor"]

log = logging.getLogger("evstate")

_LOAD_ATTEMPTS = 5
_IO = DiskIO()  # only its read methods are used: a follower never writes the owner's files


class _Retry(Exception):
    """The owner's compaction moved files during a load: list them again."""


class _Gap(Exception):
    """The next record is not the next revision: what was expected is gone."""


def _after(
    entries: builtins.list[tuple[int, LogEntry]], revision: int
) -> Iterator[tuple[int, EventRecord]]:
    """``(offset, record)`` of the records after ``revision``, which must be consecutive.

    Raises:
        _Gap: the next record is not the next revision.
    """
    for offset, entry in entries:
        for record in entry.records:
            if record.revision <= revision:
                continue
            if record.revision != revision + 1:
                raise _Gap(f"revision {record.revision} where {revision + 1} was expected")
            revision = record.revision
            yield offset, record


OwnerCursors = dict[str, builtins.list[tuple[int, int]]]
"""Per trigger of the owner, the runs of cursors its batch records carried:
``(revision of the newest record of the run, cursor)``. A cursor only grows within a run; a
smaller one (the owner replayed the trigger) starts a new run, so the cursor that counts
after a replay made at revision R is the newest run noted after R (:func:`owner_cursor`)."""


def _note(cursors: OwnerCursors, name: str, cursor: int, source: int) -> None:
    runs = cursors.setdefault(name, [])
    if runs and cursor >= runs[-1][1]:
        runs[-1] = (max(source, runs[-1][0]), cursor)
    else:
        runs.append((source, cursor))
        del runs[:-16]  # replays are rare: keep the newest few runs


def owner_cursor(cursors: OwnerCursors, name: str, reset: int) -> int:
    """The owner's cursor of ``name`` from its batch records noted after revision ``reset``."""
    return max((cursor for source, cursor in cursors.get(name, ()) if source > reset), default=0)


def _note_cursors(entries: builtins.list[tuple[int, LogEntry]], cursors: OwnerCursors) -> None:
    """Note the trigger cursor each batch record carries (the owner's triggers)."""
    for _offset, entry in entries:
        if entry.cursor is not None and entry.records:
            name, cursor = entry.cursor
            _note(cursors, name, cursor, entry.records[-1].revision)


@dataclass
class _Loaded:
    table: StateTable
    base: int
    revision: int
    timestamp: int | None
    tail: SegmentTail | None
    cursors: OwnerCursors
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
        self.timeline = FileTimeline(directory, _IO, self.lock, lambda: self.revision)
        self.table = StateTable()
        self.revision = 0
        self.timestamp: int | None = None
        self.owner_cursors: OwnerCursors = {}
        self.problem: str | None = None  # damage that stops the follower, if any
        self.closed = False
        self._tail: SegmentTail | None = None
        self.feed = RecordFeed(1)
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
        segments = list_segments(self.directory, _IO)
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
            {name: [(base, cursor)] for name, cursor in snap.cursors.items()} if snap else {},
        )
        todo = segments[starts[-1] :] if segments else []
        total = sum(file_size(path) for _, path in todo)
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
            done += file_size(path)
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
        for offset, record in _after(entries, loaded.revision):
            apply(record)
            loaded.revision = record.revision
            loaded.timestamp = record.timestamp
            if keep_after is not None and record.revision > keep_after:
                loaded.kept.append((record, segment, offset))
        _note_cursors(entries, loaded.cursors)

    def _install(self, loaded: _Loaded, *, initial: bool = False) -> None:
        with self.lock:
            old_tail, old_revision = self._tail, self.revision
            self.table.take(loaded.table)  # readers switch to the new state in one step
            self.revision, self.timestamp = loaded.revision, loaded.timestamp
            self._tail = loaded.tail
            for name, runs in loaded.cursors.items():
                for source, cursor in runs:
                    _note(self.owner_cursors, name, cursor, source)
            self.timeline.forget_index()
            if initial or loaded.revision < old_revision:
                if not initial:
                    log.warning(
                        "evstate follower: %s went back from revision %d to %d "
                        "(the store was replaced); following the new one",
                        self.directory,
                        old_revision,
                        loaded.revision,
                    )
                self.feed.reset(loaded.revision + 1)
            elif loaded.base > old_revision:
                # Compacted before we read it: the feed restarts after the snapshot.
                self.feed.reset(loaded.base + 1, [record for record, _, _ in loaded.kept])
            else:
                self.feed.extend([record for record, _, _ in loaded.kept])
        self.feed.notify()
        if old_tail is not None and old_tail is not loaded.tail:
            old_tail.close()

    def _resync(self) -> None:
        self._install(self._rebuild(self.revision, None))

    # ---- following ----------------------------------------------------------------------

    def _apply(self, entries: builtins.list[tuple[int, LogEntry]], segment: int) -> None:
        with self.lock:
            try:
                # One log record at a time, applied as a whole: readers never see half of
                # a batch (evstate.core.table).
                for offset, group in itertools.groupby(
                    _after(entries, self.revision), key=lambda found: found[0]
                ):
                    records = [record for _, record in group]
                    self.table.apply_all(records)
                    for record in records:
                        self.timeline.recorded(record, segment, offset)
                    self.feed.extend(records)
                    self.revision = records[-1].revision
                    self.timestamp = records[-1].timestamp
                _note_cursors(entries, self.owner_cursors)
            finally:
                self.feed.notify()

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
                segments = list_segments(self.directory, _IO)
                with self.lock:
                    self.timeline.saw_segments(segments)
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
        segments = list_segments(self.directory, _IO)
        with self.lock:
            self.timeline.saw_segments(segments)
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
        return self.feed.records(low, high, self.timeline)

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
            self.feed.notify()
            if tail is not None:
                tail.close()
