"""History of a store directory: its segments and snapshots as a log source.

:class:`FileTimeline` is the file store's :class:`~evstate.core.log_source.LogSource`, used
by the owner of a directory and by its read-only followers alike, so both answer history,
``at()`` and ``verify`` from the same files by the same rules. It never writes: the owner's
log appends, snapshots and compaction are elsewhere (:mod:`evstate.backends.file.log`,
:mod:`evstate.backends.file.maintenance`).

Every read copes with compaction deleting files under it (the owner's own, or another
process's): a file that vanishes mid-read turns into
:class:`~evstate.errors.HistoryCompactedError` (or a retry), never a shorter answer.

Two rules every answer obeys:

- **The replay floor.** The oldest retained segment starts at revision ``floor + 1``; a
  snapshot older than ``floor`` is an orphan (a crash between compaction's segment and
  snapshot deletions leaves one behind) and is never used as a starting point.
- **The horizon** is 0 while the log reaches back to revision 1, else the oldest snapshot
  at or after the floor.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.index import LogIndex, RecordVanished, read_record_at, scan_records
from evstate.backends.file.maintenance import read_head
from evstate.backends.file.segment import HEADER_SIZE, list_segments, read_header, scan_segment
from evstate.backends.file.snapshot import (
    SnapshotError,
    list_snapshots,
    read_snapshot,
    read_snapshot_header,
)
from evstate.core.audit import compacted
from evstate.core.log_source import Progress
from evstate.core.replay import Scopes, compare_replays, replay
from evstate.errors import CorruptionError, HistoryCompactedError
from evstate.events import EventRecord, RecordDecodeError, decode_entry

__all__ = ["FileTimeline", "file_size"]

log = logging.getLogger("evstate")

_RESUME_POINTS = 32
_ATTEMPTS = 3  # reads that lose a file to compaction are tried this many times
_IndexEntry = tuple[int, int, str, str, int, int]


def file_size(path: str) -> int:
    """The size of ``path`` in bytes, 0 if it is gone."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class _Vanished(Exception):
    """A file disappeared during verify (compaction ran): check again."""


class FileTimeline:
    """History over a store directory's segments and snapshots (see the module doc).

    ``head()`` is the newest revision this reader has applied; ``lock`` is held by whoever
    applies records and calls :meth:`recorded` (the owner's write lock, a follower's lock).
    """

    def __init__(
        self, directory: str, io: DiskIO, lock: threading.Lock, head: Callable[[], int]
    ) -> None:
        self.directory = directory
        self.io = io
        self.notes: list[str] = []
        self._head = head
        self._lock = lock
        self._index: LogIndex | None = None
        self._pending: list[_IndexEntry] | None = None
        self._index_build = threading.Lock()
        self._generation = 0  # bumped by forget_index: an index built across it is stale
        self._oldest_seen: int | None = None
        self._resume: dict[int, tuple[str, int]] = {}  # revision -> (segment, frame offset)
        self._resume_lock = threading.Lock()
        # The owner's key index writer is fed every record it appends (a follower: None).
        self.key_index_feed: Callable[[int, int, str, str, int, int], None] | None = None
        self._salts: dict[str, int] = {}  # segment path -> its record-checksum salt

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("evstate: %s", text)

    def segments(self) -> list[tuple[int, str]]:
        """``(first revision, path)`` of every segment, oldest first."""
        return list_segments(self.directory, self.io)

    # ---- the index ----------------------------------------------------------------

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Index an applied record, if the index exists or is being built (lock held)."""
        entry = (record.revision, record.timestamp, record.scope, record.key, segment, offset)
        if self.key_index_feed is not None:
            self.key_index_feed(*entry)
        if self._index is not None:
            self._index.add(*entry)
        elif self._pending is not None:
            self._pending.append(entry)

    def forget_index(self) -> None:
        """Drop the index (lock held): history was compacted, or the files were replaced."""
        self._index = None
        self._pending = None
        self._generation += 1
        self._salts.clear()
        with self._resume_lock:
            self._resume.clear()

    def saw_segments(self, segments: list[tuple[int, str]]) -> None:
        """Note a listing (lock held); when the oldest segment changed, forget the index."""
        oldest = segments[0][0] if segments else None
        if oldest != self._oldest_seen:
            if self._oldest_seen is not None:
                self.forget_index()
            self._oldest_seen = oldest

    def index(self) -> LogIndex:
        """The log index, built on first use by one scan, without blocking writers."""
        index = self._index
        if index is not None:
            return index
        with self._index_build:
            for _attempt in range(_ATTEMPTS):
                if self._index is not None:
                    return self._index
                with self._lock:
                    head, generation = self._head(), self._generation
                    self._pending = []
                try:
                    built = LogIndex.build(self.segments(), head)
                except FileNotFoundError:
                    continue  # compaction deleted a segment under the scan: start over
                with self._lock:
                    if generation != self._generation:
                        continue  # compacted meanwhile: the appends noted were dropped
                    for entry in self._pending or []:
                        built.add(*entry)
                    self._pending = None
                    self._index = built
                    return built
        raise HistoryCompactedError(
            "the log kept being compacted while its index was built; try again",
            horizon=self.oldest_revision(),
        )

    # ---- the retained range -------------------------------------------------------

    def _floor(self, segments: list[tuple[int, str]]) -> int:
        """The revision the retained segments continue from (the replay floor)."""
        return segments[0][0] - 1 if segments else self._head()

    def horizon(self) -> int:
        """The oldest revision whose state :meth:`state_at` can rebuild."""
        segments = self.segments()
        floor = self._floor(segments)
        if floor == 0:
            return 0
        usable = [
            s.revision for s in list_snapshots(self.directory, self.io) if s.revision >= floor
        ]
        return usable[0] if usable else self._head()

    def horizon_timestamp(self) -> int | None:
        """Time (ms) of the event at the horizon; None when the horizon is revision 0."""
        horizon = self.horizon()
        if horizon == 0:
            return None
        for snap in list_snapshots(self.directory, self.io):
            if snap.revision == horizon:
                try:
                    return read_snapshot_header(snap.path)[1]
                except SnapshotError:
                    return None
        return None

    def oldest_revision(self) -> int:
        """The oldest revision whose event is still in the log."""
        segments = self.segments()
        return segments[0][0] if segments else self._head() + 1

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before time ``ms`` (ms since the epoch)."""
        return min(self.index().revision_at_time(ms), head)

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest revision at or after time ``ms``."""
        return self.index().first_revision_from_time(ms)

    # ---- reads ----------------------------------------------------------------------

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of one key with revisions in ``[low, high]``, oldest first."""
        try:
            return self.index().key_records(self.directory, scope, key, low, high, self._salts)
        except RecordVanished as exc:
            raise compacted(exc.revision, self.oldest_revision()) from None

    def scan(self, low: int, high: int, progress: Progress | None = None) -> Iterator[EventRecord]:
        """Stream records with revisions in ``[low, high]``, one segment in memory at a time.

        Raises:
            CorruptionError: a segment ends (or is damaged) before the revisions it must
                hold; recovery does not read segments a snapshot covers, so damage there
                shows here, never as a shortened history.
            HistoryCompactedError: a segment was compacted while being read.
        """
        segments = self.segments()
        picked = []
        for i, (first, path) in enumerate(segments):
            last = segments[i + 1][0] - 1 if i + 1 < len(segments) else high
            if last >= low and first <= high:
                picked.append((first, min(last, high), path))
        total = sum(file_size(path) for _, _, path in picked)
        done = 0
        for first, last, path in picked:
            seen = first - 1
            try:
                for record in self._scan_segment(path, low, high):
                    seen = record.revision
                    yield record
            except FileNotFoundError:
                raise HistoryCompactedError(
                    f"segment {path} was compacted while being read",
                    horizon=self.oldest_revision(),
                ) from None
            if seen < last:
                raise CorruptionError(
                    f"segment ends at revision {seen}, before revision {last}", path=path
                )
            done += file_size(path)
            if progress is not None:
                progress(min(done, total), total)

    def _scan_segment(self, path: str, low: int, high: int) -> Iterator[EventRecord]:
        """The records of one segment from ``low`` to ``high`` (its last revision seen).

        A scan that goes on where an earlier one stopped (a trigger catching up, batch
        after batch) starts at the frame that one ended in, not at the segment's start: the
        frame must still hold ``low - 1`` (else the file changed, and it starts over).
        """
        with self._resume_lock:
            found = self._resume.pop(low, None)
        start = found[1] if found is not None and found[0] == path else HEADER_SIZE
        last: tuple[int, int] | None = None
        try:
            for offset, record in scan_records(path, upto=high, start=start):
                if start != HEADER_SIZE and last is None and record.revision != low - 1:
                    yield from self._scan_segment(path, low, high)  # not where it was
                    return
                last = (record.revision, offset)
                if record.revision >= low:
                    yield record
        finally:
            if last is not None:
                with self._resume_lock:
                    self._resume[last[0] + 1] = (path, last[1])
                    while len(self._resume) > _RESUME_POINTS:
                        del self._resume[next(iter(self._resume))]

    def state_at(
        self, revision: int, progress: Progress | None = None
    ) -> tuple[Scopes, int | None]:
        """The state as of ``revision`` (nearest usable snapshot plus replay) and its time.

        Raises:
            HistoryCompactedError: ``revision`` is before the horizon.
        """
        horizon = self.horizon()
        if revision < horizon:
            raise compacted(revision, horizon)
        floor = self._floor(self.segments())
        base, scopes, stamp = 0, Scopes(), None
        for snap in reversed(list_snapshots(self.directory, self.io)):
            if snap.revision > revision:
                continue
            if snap.revision < floor:
                break  # an orphan: the records after it were compacted
            try:
                base, stamp, scopes, _ = read_snapshot(snap, self.io)
                break
            except SnapshotError as exc:
                self._note(f"ignored bad snapshot ({exc})")
        if base == 0 and floor > 0:
            raise HistoryCompactedError(
                f"no valid snapshot at or before revision {revision}", horizon=self.horizon()
            )
        last = replay(scopes, self.scan(base + 1, revision, progress))
        if last is not None:
            stamp = last
        return scopes, (stamp if revision else None)

    # ---- checks and numbers -----------------------------------------------------------

    def verify(self, head: int, live: Scopes, progress: Progress | None = None) -> list[str]:
        """Check every record and snapshot up to ``head``, and that replays agree with ``live``.

        Safe while the owner writes and compacts (a check that loses a file to
        compaction runs again). A torn tail after ``head`` at the end of the newest
        segment is not a problem: it is a write in progress, or one the next open cuts off.
        """
        for _attempt in range(_ATTEMPTS):
            try:
                return self._verify(head, live, progress)
            except _Vanished:
                continue
        return ["files kept disappearing during the check (compaction is running); try again"]

    def _verify(self, head: int, live: Scopes, progress: Progress | None) -> list[str]:
        problems: list[str] = []
        segments = self.segments()
        snapshots = list_snapshots(self.directory, self.io)
        total = 3 * sum(file_size(p) for _, p in segments)
        total += sum(file_size(s.path) for s in snapshots)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        expected: int | None = None
        for i, (first, path) in enumerate(segments):
            try:
                data = self.io.read_file(path)
            except FileNotFoundError:
                raise _Vanished from None
            advance(len(data))
            try:
                named, salt = read_header(data)
                if named != first:
                    problems.append(f"{path}: header revision differs from the file name")
            except ValueError as exc:
                problems.append(f"{path}: bad segment header: {exc}")
                expected = None
                continue
            if expected is not None and first != expected:
                problems.append(f"{path}: revision gap: expected {expected}, starts at {first}")
            expected = first
            scan = scan_segment(data, start=HEADER_SIZE, salt=salt)
            for offset, payload in scan.records:
                try:
                    records = decode_entry(payload).records
                except RecordDecodeError as exc:
                    problems.append(f"{path} offset {offset}: {exc}")
                    break
                for record in records:
                    if record.revision != expected and record.revision <= head:
                        problems.append(
                            f"{path} offset {offset}: revision {record.revision}, "
                            f"expected {expected}"
                        )
                    expected = record.revision + 1
            in_progress = i == len(segments) - 1 and not scan.corrupt and expected > head
            if scan.bad_offset is not None and not in_progress:
                problems.append(f"{path} offset {scan.bad_offset}: {scan.reason}")
        if expected is not None and expected <= head:
            problems.append(f"the log ends at revision {expected - 1}, the store is at {head}")
        known, where = read_head(self.directory, self.io)
        log_end = expected - 1 if expected is not None else self._floor(segments)
        if log_end < known:
            problems.append(
                f"the log ends at revision {log_end}, but the store had reached revision "
                f"{known} ({where}): a segment is missing or was cut"
            )
        valid: list[tuple[int, Scopes]] = []
        for info in snapshots:
            try:
                snap = read_snapshot(info, self.io)
            except SnapshotError as exc:
                if not os.path.exists(info.path):
                    raise _Vanished from None
                problems.append(f"bad snapshot: {exc}")
                continue
            advance(file_size(info.path))
            if snap.revision <= head:
                valid.append((snap.revision, snap.scopes))
        if problems:
            return problems
        floor = segments[0][0] - 1 if segments else 0
        starts = [start for start in valid if start[0] >= floor]  # older ones are orphans
        if (segments and segments[0][0] == 1) or (not segments and not starts):
            starts.insert(0, (0, {}))
        seen = 0

        def scan_counted(low: int, high: int) -> Iterator[EventRecord]:
            def step(part: int, _total: int) -> None:
                nonlocal seen
                advance(part - seen)
                seen = part

            return self.scan(low, high, step)

        try:
            return compare_replays(starts, head, live, scan_counted)
        except HistoryCompactedError:
            raise _Vanished from None

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the files, and the retained range."""
        segments = self.segments()
        snapshots = list_snapshots(self.directory, self.io)
        head = self._head()
        oldest = segments[0][0] if segments else head + 1
        oldest_time = None
        if segments and oldest <= head:
            try:
                oldest_time = read_record_at(segments[0][1], HEADER_SIZE).timestamp
            except (OSError, CorruptionError):
                oldest_time = None
        return {
            "segments": len(segments),
            "log_bytes": sum(file_size(p) for _, p in segments),
            "snapshots": len(snapshots),
            "snapshot_bytes": sum(file_size(s.path) for s in snapshots),
            "last_snapshot_revision": snapshots[-1].revision if snapshots else None,
            "oldest_revision": oldest,
            "oldest_timestamp": oldest_time,
            "horizon_revision": self.horizon(),
            "index_built": self._index is not None,
        }
