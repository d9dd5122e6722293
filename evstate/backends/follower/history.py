"""History over a store directory a follower reads but does not own.

The read half of the owner's timeline (evstate/timeline.py), rebuilt on the read-only
readers of :mod:`evstate.backends.follower.files`: a lazily built :class:`~evstate.backends.file.index.LogIndex`
for ``history`` and time lookups, streaming scans, the state at a past revision, the
checks of ``verify``, and file statistics. Every method copes with the owner's compaction
deleting files under it: a file that vanishes mid-read turns into
:class:`~evstate.errors.HistoryCompactedError` (or a retry), never a wrong answer.

Long reads take an optional ``progress(done, total)`` callback, counted in bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from evstate.backends.file.diskio import DiskIO
from evstate.errors import CorruptionError, HistoryCompactedError
from evstate.events import DELETED, EventRecord, RecordDecodeError, decode_entry
from evstate.backends.follower.files import Progress, list_segments, newest_snapshot
from evstate.backends.file.index import LogIndex, read_record_at, scan_records
from evstate.backends.file.segment import HEADER_SIZE, decode_header, scan_segment
from evstate.backends.file.snapshot import SnapshotError, list_snapshots, read_snapshot

__all__ = ["FollowerHistory", "Scopes", "apply_record"]

Scopes = dict[str, dict[str, bytes]]
_IndexEntry = tuple[int, int, str, str, int, int]
_VERIFY_ATTEMPTS = 3
_IO = DiskIO()  # only its read methods are used: a follower never writes the owner's files


def apply_record(scopes: Scopes, record: EventRecord) -> None:
    """Apply one event to a ``scope -> key -> encoded value`` map (replay)."""
    if record.type_code == DELETED:
        keys = scopes.get(record.scope)
        if keys is not None and keys.pop(record.key, None) is not None and not keys:
            del scopes[record.scope]
    else:
        assert record.new is not None
        scopes.setdefault(record.scope, {})[record.key] = record.new


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _compacted(what: str, oldest: int) -> HistoryCompactedError:
    return HistoryCompactedError(
        f"{what} was compacted by the owner while being read", horizon=oldest
    )


class _Vanished(Exception):
    """A file disappeared during verify (the owner compacted): run the check again."""


class FollowerHistory:
    """History, past states and checks over the owner's files (see the module doc).

    ``head`` is the follower's revision: the newest record it has applied. The follower
    updates it, and calls :meth:`recorded` for every record it applies, under ``lock``.
    """

    def __init__(self, directory: str, lock: threading.Lock) -> None:
        self.directory = directory
        self.head = 0
        self._lock = lock
        self._index: LogIndex | None = None
        self._pending: list[_IndexEntry] | None = None
        self._generation = 0
        self._oldest_seen: int | None = None
        self._index_build = threading.Lock()

    # ---- the index ----------------------------------------------------------------------

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Index an applied record if the index exists or is being built (lock held)."""
        entry = (record.revision, record.timestamp, record.scope, record.key, segment, offset)
        if self._index is not None:
            self._index.add(*entry)
        elif self._pending is not None:
            self._pending.append(entry)

    def forget_index(self) -> None:
        """Drop the index (lock held); the next use rebuilds it from what is retained."""
        self._index = None
        self._pending = None
        self._generation += 1

    def saw_segments(self, segments: list[tuple[int, str]]) -> None:
        """Note a listing (lock held): when the oldest segment changed, history was compacted."""
        oldest = segments[0][0] if segments else None
        if oldest != self._oldest_seen:
            if self._oldest_seen is not None:
                self.forget_index()
            self._oldest_seen = oldest

    def index(self) -> LogIndex:
        """The log index, built on first use by scanning the retained segments once."""
        index = self._index
        if index is not None:
            return index
        with self._index_build:
            for _attempt in range(_VERIFY_ATTEMPTS):
                if self._index is not None:
                    return self._index
                with self._lock:
                    head, generation = self.head, self._generation
                    self._pending = []
                try:
                    built = LogIndex.build(list_segments(self.directory), head)
                except FileNotFoundError:
                    continue  # compacted while scanning: list again
                with self._lock:
                    if generation != self._generation:
                        continue
                    for entry in self._pending or []:
                        built.add(*entry)
                    self._pending = None
                    self._index = built
                    return built
        raise _compacted("the log", self.oldest_revision())

    # ---- reads --------------------------------------------------------------------------

    def oldest_revision(self) -> int:
        """The oldest revision whose event is still in the log (``head + 1`` if none)."""
        segments = list_segments(self.directory)
        return segments[0][0] if segments else self.head + 1

    def horizon(self) -> int:
        """The oldest revision whose state can be rebuilt (as the owner's ``at`` answers)."""
        segments = list_segments(self.directory)
        if segments and segments[0][0] == 1:
            return 0
        snapshots = list_snapshots(self.directory, _IO)
        return snapshots[0].revision if snapshots else self.head

    def revision_at_time(self, ms: int) -> int:
        """The newest revision at or before time ``ms`` (ms since the epoch)."""
        return min(self.index().revision_at_time(ms), self.head)

    def first_revision_from_time(self, ms: int) -> int:
        """The oldest revision at or after time ``ms``."""
        return self.index().first_revision_from_time(ms)

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of ``scope/key`` with revisions in ``[low, high]``, oldest first."""
        index = self.index()
        records = []
        for revision in index.key_revisions(scope, key, low, high):
            first, offset = index.location(revision)
            path = os.path.join(self.directory, f"{first:020d}.log")
            try:
                records.append(read_record_at(path, offset, revision))
            except FileNotFoundError:
                raise _compacted(f"revision {revision}", self.oldest_revision()) from None
        return records

    def scan(self, low: int, high: int, progress: Progress | None = None) -> Iterator[EventRecord]:
        """Stream records with revisions in ``[low, high]``, one segment in memory at a time."""
        segments = list_segments(self.directory)
        picked = []
        for i, (first, path) in enumerate(segments):
            last = segments[i + 1][0] - 1 if i + 1 < len(segments) else high
            if last >= low and first <= high:
                picked.append(path)
        total = sum(_size(p) for p in picked)
        done = 0
        for path in picked:
            try:
                for _offset, record in scan_records(path, upto=high):
                    if record.revision >= low:
                        yield record
            except FileNotFoundError:
                raise _compacted(f"segment {path}", self.oldest_revision()) from None
            done += _size(path)
            if progress is not None:
                progress(min(done, total), total)

    def state_at(
        self, revision: int, progress: Progress | None = None
    ) -> tuple[Scopes, int | None]:
        """The state as of ``revision`` and the timestamp of its event (None for 0).

        Raises:
            HistoryCompactedError: ``revision`` is before the horizon.
        """
        horizon = self.horizon()
        if revision < horizon:
            raise HistoryCompactedError(
                f"revision {revision} is before the retention horizon (revision {horizon})",
                horizon=horizon,
            )
        snap = newest_snapshot(self.directory, at_or_before=revision)
        base, stamp = (snap.revision, snap.timestamp) if snap else (0, None)
        scopes: Scopes = snap.scopes if snap else {}
        if snap is None and self.oldest_revision() > 1:
            raise HistoryCompactedError(
                f"no valid snapshot at or before revision {revision}", horizon=self.horizon()
            )
        for record in self.scan(base + 1, revision, progress):
            apply_record(scopes, record)
            stamp = record.timestamp
        return scopes, (stamp if revision else None)

    # ---- checks ---------------------------------------------------------------------------

    def verify(self, head: int, live: Scopes, progress: Progress | None = None) -> list[str]:
        """Check every record, revision continuity, every snapshot, and replay agreement.

        Read-only and safe while the owner writes: only revisions up to ``head`` are checked,
        and a check that loses a file to the owner's compaction is run again.
        """
        for _attempt in range(_VERIFY_ATTEMPTS):
            try:
                return self._verify(head, live, progress)
            except _Vanished:
                continue
        return ["files kept disappearing during the check (the owner is compacting); try again"]

    def _verify(self, head: int, live: Scopes, progress: Progress | None) -> list[str]:
        problems: list[str] = []
        segments = list_segments(self.directory)
        snapshots = list_snapshots(self.directory, _IO)
        log_bytes = sum(_size(p) for _, p in segments)
        total = 3 * log_bytes + sum(_size(s.path) for s in snapshots)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        expected: int | None = None
        for i, (first, path) in enumerate(segments):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise _Vanished from None
            advance(len(data))
            try:
                if decode_header(data) != first:
                    problems.append(f"{path}: header revision differs from the file name")
            except ValueError as exc:
                problems.append(f"{path}: bad segment header: {exc}")
                expected = None
                continue
            if expected is not None and first != expected:
                problems.append(f"{path}: revision gap: expected {expected}, starts at {first}")
            expected = first
            scan = scan_segment(data, start=HEADER_SIZE)
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
            is_last = i == len(segments) - 1
            if scan.bad_offset is not None and not (is_last and not scan.corrupt):
                problems.append(f"{path} offset {scan.bad_offset}: {scan.reason}")
        if expected is not None and expected <= head:
            problems.append(f"the log ends at revision {expected - 1}, the store is at {head}")
        valid: list[tuple[int, Scopes]] = []
        for info in snapshots:
            try:
                snap = read_snapshot(info.path, _IO)
            except SnapshotError as exc:
                if not os.path.exists(info.path):
                    raise _Vanished from None
                problems.append(f"bad snapshot: {exc}")
                continue
            advance(_size(info.path))
            if snap.revision <= head:
                valid.append((snap.revision, snap.scopes))
        if problems:
            return problems
        if not (segments and segments[0][0] == 1) and not valid:
            return ["no snapshot covers the revisions before the oldest segment"]
        starts: list[tuple[int, Scopes]] = [(0, {})] if segments and segments[0][0] == 1 else []
        starts += valid
        try:
            oldest = self._replay(starts[0], head, advance)
            newest = self._replay(starts[-1], head, advance)
        except HistoryCompactedError:
            raise _Vanished from None
        if newest != oldest:
            problems.append("newest snapshot + replay differs from a full replay")
        if newest != live:
            problems.append("the live state differs from a replay of the log")
        return problems

    def _replay(self, start: tuple[int, Scopes], head: int, advance: Any) -> Scopes:
        base, scopes = start
        scopes = {scope: dict(keys) for scope, keys in scopes.items()}
        seen = 0

        def step(done: int, _total: int) -> None:
            nonlocal seen
            advance(done - seen)
            seen = done

        for record in self.scan(base + 1, head, step):
            apply_record(scopes, record)
        return scopes

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the owner's files, and the retained range."""
        segments = list_segments(self.directory)
        snapshots = list_snapshots(self.directory, _IO)
        oldest = segments[0][0] if segments else self.head + 1
        oldest_time = None
        if segments and oldest <= self.head:
            try:
                oldest_time = read_record_at(segments[0][1], HEADER_SIZE).timestamp
            except (OSError, CorruptionError):
                oldest_time = None
        return {
            "segments": len(segments),
            "log_bytes": sum(_size(p) for _, p in segments),
            "snapshots": len(snapshots),
            "snapshot_bytes": sum(_size(s.path) for s in snapshots),
            "last_snapshot_revision": snapshots[-1].revision if snapshots else None,
            "oldest_revision": oldest,
            "oldest_timestamp": oldest_time,
            "horizon_revision": self.horizon(),
            "index_built": self._index is not None,
        }
