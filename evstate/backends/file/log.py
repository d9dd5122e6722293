"""The segmented, append-only event log of a file store.

Format and recovery rules: docs/format.md. Durability modes: docs/config.md (``fsync``).

Threading: :meth:`SegmentLog.append` must be called by one thread at a time (the store
holds its write lock); :meth:`wait_durable`, :meth:`flush` and the background syncer may
run concurrently with appends. Concurrent waiters share fsyncs (group commit): one waiter
becomes the leader and syncs everything written so far, the others wait for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.index import segment_salt
from evstate.backends.file.key_index_writer import KeyIndexWriter
from evstate.backends.file.layout import segment_name
from evstate.backends.file.segment import (
    FRAME_SIZE,
    HEADER_SIZE,
    encode_header,
    frame_record,
    list_segments,
    new_salt,
    read_header,
    scan_segment,
)
from evstate.errors import CorruptionError, StorageError, StoreFailedError
from evstate.events import EventRecord, RecordDecodeError, decode_entry

__all__ = ["SegmentLog"]

log = logging.getLogger("evstate")


@dataclass(slots=True, eq=False)
class _Segment:
    """An open segment: its descriptor and bookkeeping for safe closing."""

    path: str
    first_revision: int
    fd: int
    size: int
    salt: int  # mixed into every record checksum of this segment (docs/format.md section 3)
    pins: int = 0  # fsyncs in flight on this fd; it is closed only at zero
    retired: bool = False


class SegmentLog:
    """Append-only log of event records split into size-bounded segment files.

    Use: construct, iterate :meth:`recover` to the end (it yields every retained record in
    revision order and leaves the log ready to append), then :meth:`append`.
    """

    def __init__(
        self,
        directory: str,
        *,
        segment_size: int,
        fsync: str,
        fsync_interval_ms: int,
        io: DiskIO | None = None,
    ) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.fsync_mode = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.io = io or DiskIO()
        self.recovery_notes: list[str] = []
        # bytes of the records after the snapshot recovery started from, plus every byte
        # appended since: what a new snapshot would save the next open from replaying
        self.tail_bytes = 0
        self._must_reach: tuple[int, str] = (0, "")
        # trigger cursors found in batch records: name -> (cursor, revision of the record)
        self.recovered_cursors: dict[str, tuple[int, int]] = {}
        self.head_revision = 0
        self._active: _Segment | None = None
        self._io_lock = threading.Lock()  # order: store write lock -> _io_lock -> _sync_cond
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._written = 0  # highest revision handed to the OS
        self._durable = 0  # highest revision known fsynced
        self.failure: str | None = None  # why writes are refused (a failed fsync), or None
        self._closed = False
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.key_indexes = KeyIndexWriter(directory, self.io)  # docs/format.md section 11

    # ---- recovery -------------------------------------------------------------------

    def _segment_files(self) -> list[tuple[int, str]]:
        return list_segments(self.directory, self.io)

    def _note(self, text: str) -> None:
        self.recovery_notes.append(text)
        log.warning("evstate recovery: %s", text)

    def recover(
        self, after: int = 0, must_reach: tuple[int, str] = (0, "")
    ) -> Iterator[EventRecord]:
        """Yield every record with a revision above ``after``, oldest first.

        ``after`` is the revision a snapshot already holds; segments wholly at or below it
        are not read. A torn tail of the newest segment is repaired. ``must_reach`` is a
        head the store is known to have reached, and where that is recorded: a log that
        ends before it (a missing or cut newest segment) is corruption. Every check runs
        before the first repair, so an open that fails changes no file.

        Raises:
            CorruptionError: damage that is not a torn tail (names file and offset), or a
                log that does not reach back to ``after + 1``, or ends before
                ``must_reach``.
            StorageError: the directory could not be read, repaired or made durable.
        """
        self._must_reach = must_reach
        try:
            yield from self._recover(after)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"could not recover the log in {self.directory}: {exc}") from exc

    def _check_end(self, end: int, after: int, path: str) -> None:
        """Refuse a log that ends at ``end``, before what it must hold (before any repair)."""
        if end < after:
            raise CorruptionError(
                f"the log ends at revision {end}, before the snapshot's {after}", path=path
            )
        reach, where = self._must_reach
        if end < reach:
            raise CorruptionError(
                f"the log ends at revision {end}, but the store had reached revision {reach} "
                f"({where}): a segment is missing or was cut. Restore it from a backup; or, "
                f"to open at revision {end} and lose the rest, move HEAD and triggers.cbor "
                "aside",
                path=path,
            )

    def _recover(self, after: int) -> Iterator[EventRecord]:
        files = self._segment_files()
        expected: int | None = None
        last_index = len(files) - 1
        if files and files[0][0] > after + 1:
            raise CorruptionError(
                f"the log starts at revision {files[0][0]}, but the state it continues "
                f"(a snapshot or the empty store) is at revision {after}",
                path=files[0][1],
                offset=0,
            )
        for index, (name_revision, path) in enumerate(files):
            is_last = index == last_index
            if not is_last and files[index + 1][0] - 1 <= after:
                continue  # wholly covered by the snapshot
            if expected is None and name_revision <= after:
                expected = name_revision
            data = self.io.read_file(path)
            header_zero = data.count(0, 0, HEADER_SIZE) == min(len(data), HEADER_SIZE)
            if len(data) < HEADER_SIZE or header_zero:
                unfinished = len(data) < HEADER_SIZE or data.count(0) == len(data)
                if not (is_last and unfinished):
                    raise CorruptionError("segment header missing or zero", path=path, offset=0)
                # A segment created by a crashed roll: its header never reached the disk.
                end = expected - 1 if expected is not None else max(name_revision - 1, after)
                self._check_end(end, after, path)
                self._note(f"removed unfinished segment {path} ({len(data)} bytes)")
                self.io.remove(path)
                self.io.fsync_dir(self.directory)
                files = files[:-1]
                if expected is None:
                    self.head_revision = max(name_revision - 1, after)
                break
            try:
                first, salt = read_header(data)
            except ValueError as exc:
                raise CorruptionError(f"bad segment header: {exc}", path=path, offset=0) from None
            if first != name_revision:
                raise CorruptionError(
                    f"segment header says first revision {first}, name says {name_revision}",
                    path=path,
                    offset=0,
                )
            if expected is not None and first != expected:
                raise CorruptionError(
                    f"revision gap: expected segment to start at {expected}, found {first}",
                    path=path,
                    offset=0,
                )
            expected = first
            scan = scan_segment(data, salt=salt)
            for offset, payload in scan.records:
                try:
                    entry = decode_entry(payload)
                except RecordDecodeError as exc:
                    raise CorruptionError(str(exc), path=path, offset=offset) from None
                if not entry.records:  # a checksummed batch of nothing: no writer makes one
                    raise CorruptionError("empty batch record", path=path, offset=offset)
                if entry.records[-1].revision > after:
                    self.tail_bytes += FRAME_SIZE + len(payload)
                for record in entry.records:
                    if record.revision != expected:
                        raise CorruptionError(
                            f"revision {record.revision} where {expected} was expected",
                            path=path,
                            offset=offset,
                        )
                    expected += 1
                    if record.revision > after:
                        yield record
                if entry.cursor is not None and entry.records[-1].revision > after:
                    name, cursor = entry.cursor
                    source = entry.records[-1].revision
                    if cursor >= self.recovered_cursors.get(name, (-1, 0))[0]:
                        self.recovered_cursors[name] = (cursor, source)
            if scan.bad_offset is not None:
                if scan.corrupt or not is_last:
                    raise CorruptionError(
                        f"{scan.reason}, and valid data follows"
                        if scan.corrupt
                        else f"{scan.reason} in a closed segment",
                        path=path,
                        offset=scan.bad_offset,
                    )
                self._check_end(expected - 1, after, path)
                dropped = len(data) - scan.valid_end
                self._note(
                    f"truncated torn tail of {path}: dropped {dropped} bytes at offset "
                    f"{scan.valid_end} ({scan.reason})"
                )
                self.io.truncate_path(path, scan.valid_end)
            self.head_revision = expected - 1
        self._check_end(
            self.head_revision if files else max(self.head_revision, after),
            after,
            files[-1][1] if files else self.directory,
        )
        if files:
            first, path = files[-1]
            size = os.path.getsize(path)
            salt = segment_salt(path)  # the newest segment may not have been read (a snapshot)
            self._active = _Segment(path, first, self.io.open_append(path), size, salt)
            # A crashed writer's last records (and the newest segment's name) may still be
            # only in the page cache: make them durable before anything reads, acknowledges
            # after or delivers them (a power cut must not take back what was served).
            self.io.fsync(self._active.fd)
            self.io.fsync_dir(self.directory)
        else:
            self.head_revision = max(self.head_revision, after)
            self._active = self._create_segment(self.head_revision + 1)
        self._written = self._durable = self.head_revision
        self.key_indexes.start(self._segment_files())
        if self.fsync_mode == "interval":
            self._syncer = threading.Thread(
                target=self._sync_loop, name="evstate-fsync", daemon=True
            )
            self._syncer.start()

    def _create_segment(self, first_revision: int) -> _Segment:
        path = os.path.join(self.directory, segment_name(first_revision))
        fd = self.io.create_exclusive(path)
        salt = new_salt()
        try:
            self.io.write_all(fd, encode_header(first_revision, salt))
        except OSError as exc:
            # Nothing was fsynced (a full disk, say): remove the partial file so the next
            # roll can start over. If that fails too, the OSError makes the caller fail.
            self.io.close(fd)
            self.io.remove(path)
            raise StorageError(f"could not start log segment {path}: {exc}") from exc
        try:
            self.io.fsync(fd)
            self.io.fsync_dir(self.directory)
        except BaseException:
            self.io.close(fd)
            raise
        return _Segment(path, first_revision, fd, HEADER_SIZE, salt)

    # ---- writing --------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise :class:`StoreFailedError` if an fsync failed earlier."""
        if self.failure is not None:
            raise StoreFailedError(self.failure)

    def append(self, payload: bytes, revision: int, last: int | None = None) -> tuple[int, int]:
        """Write one record; it is in the OS (survives a process crash) on return.

        Durability against power loss comes from :meth:`wait_durable` (``fsync: always``),
        the background syncer (``interval``) or :meth:`flush`.

        ``revision`` is the record's (first) revision; ``last`` its last one for a batch.
        Returns ``(first revision of the segment written to, offset of the record)``.

        Raises:
            StorageError: the write failed; the file is cut back, nothing was appended.
            StoreFailedError: an fsync failed earlier (or failed while rolling segments).
        """
        self.check_writable()
        with self._io_lock:
            seg = self._active
            assert seg is not None, "recover() must run before append()"
            if seg.size > HEADER_SIZE and seg.size + FRAME_SIZE + len(payload) > self.segment_size:
                seg = self._roll(revision)
            frame = frame_record(payload, seg.salt)
            self.tail_bytes += len(frame)
            try:
                self.io.write_all(seg.fd, frame)
            except OSError as exc:
                self._undo_partial_write(seg, exc)
                raise StorageError(f"could not append to {seg.path}: {exc}") from exc
            offset = seg.size
            seg.size += len(frame)
            self._written = revision if last is None else last
            self.head_revision = self._written
            return seg.first_revision, offset

    def _undo_partial_write(self, seg: _Segment, exc: OSError) -> None:
        try:
            self.io.truncate(seg.fd, seg.size)
        except OSError as cut_exc:
            # The tail may now hold a partial record: refuse writes until reopen, where
            # recovery treats it as a torn tail.
            self._fail(cut_exc)

    def _roll(self, revision: int) -> _Segment:
        """Seal the active segment (fsynced) and start a new one at ``revision``."""
        old = self._active
        assert old is not None
        try:
            self.io.failpoint("segment_roll")
            self.io.fsync(old.fd)
            new = self._create_segment(revision)
        except StorageError:
            raise  # the new segment could not be written; the old one is still active
        except OSError as exc:
            self._fail(exc)
            raise StoreFailedError(f"could not roll the log segment: {exc}") from exc
        with self._sync_cond:
            self._durable = max(self._durable, self._written)
            self._sync_cond.notify_all()
        old.retired = True
        if old.pins == 0:
            self.io.close(old.fd)
        self._active = new
        self.key_indexes.sealed(old.first_revision, old.path, new.first_revision)
        return new

    def roll_now(self) -> None:
        """Seal the active segment if it holds records, so the next record starts a new one.

        Called under the store's write lock when a snapshot is taken: the snapshot's
        revision is then the last record of a sealed segment (fsynced), so compaction can
        delete history up to it whole. Raises StoreFailedError (the old segment's fsync
        failed), or StorageError (the new segment could not be written).
        """
        self.check_writable()
        with self._io_lock:
            seg = self._active
            if seg is not None and seg.size > HEADER_SIZE:
                self._roll(self._written + 1)

    def segments(self) -> list[tuple[int, str]]:
        """``(first_revision, path)`` of every segment file, oldest first."""
        return self._segment_files()

    def delete_segments_through(self, revision: int) -> list[str]:
        """Delete sealed segments whose records are all at or below ``revision``.

        Never deletes the active segment; a segment's key index file is removed just before
        it. The deletions are made durable (directory fsync) before returning. Returns the
        deleted paths.
        """
        files = self._segment_files()
        active = self._active.path if self._active else None
        doomed = [
            (first, path)
            for (first, path), (next_first, _) in itertools.pairwise(files)
            if next_first - 1 <= revision and path != active
        ]
        self.key_indexes.forget(doomed)  # first: never an index file without its segment
        for _first, path in doomed:
            self.io.remove(path)
        if doomed:
            self.io.fsync_dir(self.directory)
        return [path for _first, path in doomed]

    def _fail(self, exc: BaseException) -> None:
        with self._sync_cond:
            if self.failure is None:
                self.failure = (
                    f"the store is read-only after a failed fsync ({exc}); "
                    "reopen it to recover from the log"
                )
                log.error("evstate: fsync failed, the store is now read-only: %s", exc)
            self._sync_cond.notify_all()

    # ---- durability -----------------------------------------------------------------

    def wait_durable(self, revision: int) -> None:
        """Return once ``revision`` is fsynced, syncing it (and others) if needed.

        Raises:
            StoreFailedError: the fsync failed; the write is not acknowledged.
        """
        cond = self._sync_cond
        with cond:
            while True:
                if self._durable >= revision:
                    return
                if self.failure is not None:
                    self.check_writable()
                if not self._syncing:
                    self._syncing = True
                    break
                cond.wait()
        self._sync_now()
        with cond:
            if self._durable < revision:
                self.check_writable()

    def _sync_now(self) -> None:
        """Leader: fsync everything written so far. Caller has claimed ``_syncing``."""
        seg: _Segment | None = None
        error: OSError | None = None
        try:
            with self._io_lock:
                seg = self._active
                target = self._written
                if seg is not None:
                    seg.pins += 1
            if seg is not None:
                try:
                    self.io.fsync(seg.fd)
                except OSError as exc:
                    error = exc
        finally:
            if seg is not None:
                with self._io_lock:
                    seg.pins -= 1
                    if seg.retired and seg.pins == 0:
                        self.io.close(seg.fd)
            with self._sync_cond:
                self._syncing = False
                if error is None and seg is not None:
                    self._durable = max(self._durable, target)
                self._sync_cond.notify_all()
        if error is not None:
            self._fail(error)

    def flush(self) -> None:
        """Make every record appended so far durable now (any fsync mode).

        Raises:
            StoreFailedError: the fsync failed.
        """
        self.wait_durable(self._written)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            if self._written > self._durable and self.failure is None:
                try:
                    self.wait_durable(self._written)
                except StoreFailedError:
                    return

    @property
    def durable_revision(self) -> int:
        """The highest revision known to be on stable storage."""
        return self._durable

    def close(self) -> None:
        """Flush, stop the syncer and close the files. Idempotent.

        Raises:
            StoreFailedError: the final fsync failed (the files are closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        newest = None  # the open segment, once flushed: its key index is written
        try:
            if self.failure is None and self._active is not None:
                self.flush()
                newest = (self._active.first_revision, self._active.path, self._written)
        finally:
            self.key_indexes.close(newest)
            seg = self._active
            if seg is not None:
                self.io.close(seg.fd)
                self._active = None
