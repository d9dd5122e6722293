"""History of a store: snapshots, retention, event reads and point-in-time state.

Two implementations behind one interface: :class:`FileTimeline` over the segment files
and snapshot files of a directory, and :class:`MemoryTimeline` over records kept in
memory. The store calls :meth:`recorded` for every committed event (under its write lock)
and asks the timeline for history, state at a revision, compaction and checks.
State maps here are ``scope -> key -> encoded value`` (bytes), as in the engine table.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from evstate.backends.file.diskio import DiskIO
from evstate.errors import CorruptionError, HistoryCompactedError, StorageError
from evstate.events import DELETED, EventRecord, decode_entry
from evstate.backends.file.index import LogIndex, read_record_at, scan_records
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.segment import HEADER_SIZE, decode_header, scan_segment, segment_name
from evstate.backends.file.snapshot import (
    Snapshot,
    SnapshotError,
    list_snapshots,
    read_snapshot,
    read_snapshot_header,
    snapshot_name,
    write_snapshot,
)

__all__ = ["FileTimeline", "MemoryTimeline", "Scopes", "Timeline", "apply_record"]

log = logging.getLogger("evstate")
Scopes = dict[str, dict[str, bytes]]


def apply_record(scopes: Scopes, record: EventRecord) -> None:
    """Apply one event to a state map (replay)."""
    if record.type_code == DELETED:
        keys = scopes.get(record.scope)
        if keys is not None and keys.pop(record.key, None) is not None and not keys:
            del scopes[record.scope]
    else:
        assert record.new is not None
        scopes.setdefault(record.scope, {})[record.key] = record.new


class Timeline(Protocol):
    """What the store needs from a history implementation."""

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None: ...  # noqa: D102
    def horizon(self) -> int: ...  # noqa: D102
    def horizon_timestamp(self) -> int | None: ...  # noqa: D102
    def oldest_revision(self) -> int: ...  # noqa: D102
    def revision_at_time(self, ms: int, head: int) -> int: ...  # noqa: D102
    def first_revision_from_time(self, ms: int, head: int) -> int: ...  # noqa: D102
    def key_records(  # noqa: D102
        self, scope: str, key: str, low: int, high: int
    ) -> list[EventRecord]: ...
    def scan(self, low: int, high: int) -> Iterator[EventRecord]: ...  # noqa: D102
    def state_at(self, revision: int) -> Scopes: ...  # noqa: D102
    def state_and_time_at(self, revision: int) -> tuple[Scopes, int | None]: ...  # noqa: D102
    def compact(self, cutoff: int, head: int) -> dict[str, Any]: ...  # noqa: D102
    def verify(self, head: int, live: Scopes) -> list[str]: ...  # noqa: D102
    def stats(self) -> dict[str, Any]: ...  # noqa: D102


def _check_horizon(revision: int, horizon: int) -> None:
    if revision < horizon:
        raise HistoryCompactedError(
            f"revision {revision} is before the retention horizon (revision {horizon})",
            horizon=horizon,
        )


# ---- file stores -----------------------------------------------------------------------


class FileTimeline:
    """History over a store directory's segments and snapshots."""

    def __init__(self, directory: str, io: DiskIO, write_lock: threading.Lock) -> None:
        self.directory = directory
        self.io = io
        self.notes: list[str] = []
        self._write_lock = write_lock
        self._log: SegmentLog | None = None
        self._index: LogIndex | None = None
        self._pending: list[tuple[int, int, str, str, int, int]] | None = None
        self._index_build = threading.Lock()
        self._generation = 0  # bumped by compaction: an index built across it is stale

    def attach(self, segment_log: SegmentLog) -> None:
        """Give the timeline the log it reads (after recovery)."""
        self._log = segment_log

    @property
    def segment_log(self) -> SegmentLog:
        """The attached log (after :meth:`attach`)."""
        assert self._log is not None
        return self._log

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("evstate: %s", text)

    # ---- snapshots ----------------------------------------------------------------

    def load_newest_snapshot(self) -> Snapshot:
        """The newest valid snapshot; an empty one at revision 0 if there is none.

        Removes leftover ``.snap.tmp`` files. A bad snapshot is reported (log and
        :attr:`notes`) and the next older one is tried.
        """
        try:
            for name in self.io.listdir(self.directory):
                if name.endswith(".snap.tmp"):
                    self.io.remove(os.path.join(self.directory, name))
                    self._note(f"removed unfinished snapshot {name}")
        except OSError as exc:
            raise StorageError(f"cannot read store directory {self.directory}: {exc}") from exc
        for info in reversed(list_snapshots(self.directory, self.io)):
            try:
                return read_snapshot(info.path, self.io)
            except SnapshotError as exc:
                self._note(f"ignored bad snapshot ({exc}); falling back to an older state")
        return Snapshot(0, 0, {}, {})

    def write_snapshot(
        self, revision: int, timestamp: int, scopes: Scopes, cursors: dict[str, int]
    ) -> str:
        """Write the snapshot of ``revision`` durably; returns its path.

        Raises:
            StorageError: it could not be written (a full disk, a failed fsync); the partial
                ``.tmp`` file is removed (best effort, so it holds no space) and is never used.
        """
        try:
            return write_snapshot(
                self.directory, revision, timestamp, scopes, self.io, cursors
            ).path
        except OSError as exc:
            tmp = os.path.join(self.directory, snapshot_name(revision) + ".tmp")
            with contextlib.suppress(OSError):
                if os.path.exists(tmp):
                    self.io.remove(tmp)
            raise StorageError(
                f"could not write the snapshot of revision {revision}: {exc}"
            ) from exc

    def _snapshot_revisions(self) -> list[int]:
        return [s.revision for s in list_snapshots(self.directory, self.io)]

    # ---- the index ----------------------------------------------------------------

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Index a committed record, if the index exists (caller holds the write lock)."""
        entry = (record.revision, record.timestamp, record.scope, record.key, segment, offset)
        if self._index is not None:
            self._index.add(*entry)
        elif self._pending is not None:
            self._pending.append(entry)

    def index(self) -> LogIndex:
        """The log index, built on first use without blocking writers for the scan."""
        index = self._index
        if index is not None:
            return index
        with self._index_build:
            while self._index is None:
                with self._write_lock:
                    head = self.segment_log.head_revision
                    self._pending = []
                    generation = self._generation
                try:
                    built = LogIndex.build(self.segment_log.segments(), head)
                except FileNotFoundError:
                    continue  # compaction deleted a segment under the scan: start over
                with self._write_lock:
                    if generation != self._generation:
                        continue  # compaction dropped the appends noted meanwhile: start over
                    pending, self._pending = self._pending, None
                    for entry in pending or []:
                        built.add(*entry)
                    self._index = built
            return self._index

    # ---- reads ----------------------------------------------------------------------

    def _replay_floor(self) -> int:
        """The oldest snapshot revision the retained segments continue from.

        An older snapshot is an orphan (a crash or an error between compaction's segment
        and snapshot deletions leaves one behind): its next records are gone, so it must
        not be used as a starting point.
        """
        segments = self.segment_log.segments()
        return segments[0][0] - 1 if segments else 0

    def horizon(self) -> int:
        """The oldest revision whose state :meth:`state_at` can rebuild."""
        floor = self._replay_floor()
        if floor == 0:
            return 0
        revisions = [r for r in self._snapshot_revisions() if r >= floor]
        return revisions[0] if revisions else self.segment_log.head_revision

    def horizon_timestamp(self) -> int | None:
        """Time (ms) of the event at the horizon; None when the horizon is revision 0."""
        horizon = self.horizon()
        if horizon == 0:
            return None
        for snap in list_snapshots(self.directory, self.io):
            if snap.revision == horizon:
                return read_snapshot_header(snap.path)[1]
        return None

    def oldest_revision(self) -> int:
        """The oldest revision whose event is still in the log."""
        segments = self.segment_log.segments()
        return segments[0][0] if segments else self.segment_log.head_revision + 1

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before time ``ms`` (ms since the epoch)."""
        return min(self.index().revision_at_time(ms), head)

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest revision at or after time ``ms``."""
        return self.index().first_revision_from_time(ms)

    def _path(self, first: int) -> str:
        return os.path.join(self.directory, segment_name(first))

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of one key with revisions in ``[low, high]``, oldest first."""
        index = self.index()
        records = []
        for revision in index.key_revisions(scope, key, low, high):
            first, offset = index.location(revision)
            try:
                records.append(read_record_at(self._path(first), offset, revision))
            except FileNotFoundError:
                raise HistoryCompactedError(
                    f"revision {revision} was compacted while being read",
                    horizon=self.oldest_revision(),
                ) from None
        return records

    def scan(self, low: int, high: int) -> Iterator[EventRecord]:
        """Stream records with revisions in ``[low, high]``, one segment in memory at a time.

        Raises:
            CorruptionError: a segment ends (or is damaged) before the revisions it must
                hold; recovery does not read segments a snapshot covers, so damage there
                shows here, never as a shortened history.
            HistoryCompactedError: a segment was compacted while being read.
        """
        segments = self.segment_log.segments()
        for i, (first, path) in enumerate(segments):
            last = segments[i + 1][0] - 1 if i + 1 < len(segments) else high
            if last < low:
                continue
            if first > high:
                return
            seen = first - 1
            try:
                for _offset, record in scan_records(path, upto=high):
                    seen = record.revision
                    if record.revision >= low:
                        yield record
            except FileNotFoundError:
                raise HistoryCompactedError(
                    f"segment {path} was compacted while being read",
                    horizon=self.oldest_revision(),
                ) from None
            if seen < min(last, high):
                raise CorruptionError(
                    f"segment ends at revision {seen}, before revision {min(last, high)}",
                    path=path,
                )

    def state_at(self, revision: int) -> Scopes:
        """The state as of ``revision``: the nearest snapshot at or before it plus replay.

        Raises:
            HistoryCompactedError: ``revision`` is before the horizon.
        """
        return self.state_and_time_at(revision)[0]

    def state_and_time_at(self, revision: int) -> tuple[Scopes, int | None]:
        """:meth:`state_at` plus the timestamp of the event at ``revision`` (None for 0)."""
        _check_horizon(revision, self.horizon())
        base, scopes, stamp = 0, Scopes(), None
        floor = self._replay_floor()
        for snap in reversed(list_snapshots(self.directory, self.io)):
            if snap.revision > revision:
                continue
            if snap.revision < floor:
                break  # an orphan: the records after it were compacted
            try:
                base, stamp, scopes, _ = read_snapshot(snap.path, self.io)
                break
            except SnapshotError as exc:
                self._note(f"ignored bad snapshot ({exc})")
        if base == 0 and self.oldest_revision() > 1:
            raise HistoryCompactedError(
                f"no valid snapshot at or before revision {revision}", horizon=self.horizon()
            )
        for record in self.scan(base + 1, revision):
            apply_record(scopes, record)
            stamp = record.timestamp
        return scopes, (stamp if revision else None)

    # ---- retention --------------------------------------------------------------------

    def compact(self, cutoff: int, head: int) -> dict[str, Any]:
        """Drop history at or below ``cutoff`` where a snapshot covers it.

        The newest snapshot at or before ``cutoff`` becomes the base; older snapshots and
        every sealed segment wholly at or below the base are deleted (durably). Segments
        after the base stay, so the state of any revision from the base on can be rebuilt.
        """
        snapshots = list_snapshots(self.directory, self.io)
        base = max((s.revision for s in snapshots if s.revision <= cutoff), default=None)
        if base is None:
            return {"base": None, "segments_deleted": 0, "snapshots_deleted": 0}
        with self._write_lock:
            self._index = None  # rebuilt lazily from what remains
            self._pending = None
            self._generation += 1
        old = [s for s in snapshots if s.revision < base]
        try:
            deleted = self.segment_log.delete_segments_through(base)
            self.io.failpoint("compaction")
            for snap in old:
                self.io.remove(snap.path)
            if old:
                self.io.fsync_dir(self.directory)
        except OSError as exc:  # what is left still opens to the same state
            raise StorageError(f"compaction failed: {exc}") from exc
        return {"base": base, "segments_deleted": len(deleted), "snapshots_deleted": len(old)}

    # ---- checks and numbers -----------------------------------------------------------

    def verify(self, head: int, live: Scopes) -> list[str]:
        """Check every record, revision continuity, every snapshot, and replay agreement."""
        problems: list[str] = []
        segments = self.segment_log.segments()
        expected: int | None = None
        for i, (first, path) in enumerate(segments):
            try:
                data = self.io.read_file(path)
                if decode_header(data) != first:
                    problems.append(f"{path}: header revision differs from the file name")
            except (OSError, ValueError) as exc:
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
                except ValueError as exc:
                    problems.append(f"{path} offset {offset}: {exc}")
                    break
                for record in records:
                    if record.revision != expected:
                        problems.append(
                            f"{path} offset {offset}: revision {record.revision}, "
                            f"expected {expected}"
                        )
                    expected = record.revision + 1
            is_last = i == len(segments) - 1
            if scan.bad_offset is not None and not (is_last and expected > head):
                problems.append(f"{path} offset {scan.bad_offset}: {scan.reason}")
        if expected is not None and expected <= head:
            problems.append(f"the log ends at revision {expected - 1}, the store is at {head}")
        valid: list[tuple[int, Scopes]] = []
        for snap in list_snapshots(self.directory, self.io):
            try:
                revision, _, scopes, _ = read_snapshot(snap.path, self.io)
                valid.append((revision, scopes))
            except SnapshotError as exc:
                problems.append(f"bad snapshot: {exc}")
        if problems:
            return problems
        floor = segments[0][0] - 1 if segments else 0
        valid = [start for start in valid if start[0] >= floor]  # older: compaction orphans
        if not (segments and segments[0][0] == 1) and not valid:
            return ["no snapshot covers the revisions before the oldest segment"]
        starts: list[tuple[int, Scopes]] = [(0, {})] if segments and segments[0][0] == 1 else []
        starts += valid
        oldest = self._replay_from(starts[0], head)
        newest = self._replay_from(starts[-1], head)
        if newest != oldest:
            problems.append("newest snapshot + replay differs from a full replay")
        if newest != live:
            problems.append("the live state differs from a replay of the log")
        return problems

    def _replay_from(self, start: tuple[int, Scopes], head: int) -> Scopes:
        base, scopes = start
        scopes = {scope: dict(keys) for scope, keys in scopes.items()}
        for record in self.scan(base + 1, head):
            apply_record(scopes, record)
        return scopes

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the files, and the retained range."""
        segments = self.segment_log.segments()
        snapshots = list_snapshots(self.directory, self.io)
        oldest = self.oldest_revision()
        oldest_time = None
        if segments and oldest <= self.segment_log.head_revision:
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


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---- in-memory stores -------------------------------------------------------------------


class MemoryTimeline:
    """History of an in-memory store: retained records in a list, plus the base state."""

    def __init__(self) -> None:
        self._records: list[EventRecord] = []
        self._base_revision = 0
        self._base_timestamp: int | None = None
        self._base: Scopes = {}
        self._keys: dict[str, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Keep a committed record (caller holds the write lock)."""
        with self._lock:
            self._records.append(record)
            self._keys.setdefault(record.scope, {}).setdefault(record.key, []).append(
                record.revision
            )

    def horizon(self) -> int:
        """The oldest revision whose state can be rebuilt."""
        return self._base_revision

    def horizon_timestamp(self) -> int | None:
        """Time (ms) of the event at the horizon; None when the horizon is revision 0."""
        return self._base_timestamp

    def oldest_revision(self) -> int:
        """The oldest revision still held."""
        return self._base_revision + 1

    def _timestamps(self) -> list[int]:
        return [r.timestamp for r in self._records]

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before ``ms``."""
        with self._lock:
            stamps = self._timestamps()
        return min(self._base_revision + bisect.bisect_right(stamps, ms), head)

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest revision at or after ``ms``."""
        with self._lock:
            stamps = self._timestamps()
        return self._base_revision + 1 + bisect.bisect_left(stamps, ms)

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of one key within ``[low, high]``."""
        with self._lock:
            revs = self._keys.get(scope, {}).get(key, [])
            picked = revs[bisect.bisect_left(revs, low) : bisect.bisect_right(revs, high)]
            return [self._records[r - self._base_revision - 1] for r in picked]

    def scan(self, low: int, high: int) -> Iterator[EventRecord]:
        """Records within ``[low, high]``."""
        with self._lock:
            start = max(low - self._base_revision - 1, 0)
            stop = max(high - self._base_revision, 0)
            records = self._records[start:stop]
        yield from records

    def state_at(self, revision: int) -> Scopes:
        """The state as of ``revision`` (base state plus replay)."""
        return self.state_and_time_at(revision)[0]

    def state_and_time_at(self, revision: int) -> tuple[Scopes, int | None]:
        """:meth:`state_at` plus the timestamp of the event at ``revision`` (None for 0)."""
        with self._lock:
            _check_horizon(revision, self._base_revision)
            scopes = {scope: dict(keys) for scope, keys in self._base.items()}
            records = self._records[: revision - self._base_revision]
            stamp = self._base_timestamp
        for record in records:
            apply_record(scopes, record)
            stamp = record.timestamp
        return scopes, (stamp if revision else None)

    def compact(self, cutoff: int, head: int) -> dict[str, Any]:
        """Fold records at or below ``cutoff`` into the base state."""
        with self._lock:
            drop = max(0, min(cutoff, head) - self._base_revision)
            if not drop:
                return {"base": self._base_revision, "events_dropped": 0}
            for record in self._records[:drop]:
                apply_record(self._base, record)
            self._base_timestamp = self._records[drop - 1].timestamp
            self._records = self._records[drop:]
            self._base_revision += drop
            low = self._base_revision + 1
            for scope in list(self._keys):
                keys = self._keys[scope]
                for key in list(keys):
                    revs = keys[key][bisect.bisect_left(keys[key], low) :]
                    if revs:
                        keys[key] = revs
                    else:
                        del keys[key]
                if not keys:
                    del self._keys[scope]
            return {"base": self._base_revision, "events_dropped": drop}

    def verify(self, head: int, live: Scopes) -> list[str]:
        """Check continuity and that base + replay equals the live state."""
        problems = []
        with self._lock:
            revisions = [r.revision for r in self._records]
        if revisions != list(
            range(self._base_revision + 1, self._base_revision + 1 + len(revisions))
        ):
            problems.append("event revisions are not continuous")
        if self.state_at(head) != live:
            problems.append("the live state differs from a replay of the events")
        return problems

    def stats(self) -> dict[str, Any]:
        """Counts of what is held."""
        with self._lock:
            oldest = self._records[0].timestamp if self._records else None
            count = len(self._records)
        return {
            "segments": 0,
            "log_bytes": 0,
            "snapshots": 0,
            "snapshot_bytes": 0,
            "last_snapshot_revision": None,
            "events_in_memory": count,
            "oldest_revision": self._base_revision + 1,
            "oldest_timestamp": oldest,
            "horizon_revision": self._base_revision,
            "index_built": True,
        }
