"""The file store (``store_method: file_based``): the core store over a directory.

What the file backend adds to :class:`~evstate.core.store.Store`: the directory lock,
recovery at open (newest valid snapshot + the log after it), the segment log as the
journal, snapshots every ``save_interval_ms``, compaction, and the durable trigger cursors
of ``triggers.cbor``. Recovery rules: docs/format.md section 4.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from typing import Any

from evstate.backends.file.cursors import FileCursors
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.lock import DirectoryLock
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.maintenance import (
    compact_directory,
    load_newest_snapshot,
    newest_snapshot_bytes,
    read_head,
    save_snapshot,
    write_head,
)
from evstate.backends.file.restore import DIRECTORY_RESTORE
from evstate.backends.file.timeline import FileTimeline, file_size
from evstate.config import Config
from evstate.core.lifecycle import Clock
from evstate.core.store import Store, register_store_kind
from evstate.core.table import StateTable
from evstate.errors import StorageError
from evstate.timings import SNAPSHOT_SECONDS

__all__ = ["SNAPSHOT_MIN_LOG_BYTES", "FileStore"]

log = logging.getLogger("evstate")

SNAPSHOT_MIN_LOG_BYTES = 1 << 20  # less log than this replays in a few ms: no snapshot


class FileStore(Store):
    """A :class:`~evstate.Store` kept in a directory (open it with :func:`evstate.open`)."""

    _restore_writer = DIRECTORY_RESTORE

    def __init__(
        self, config: Config, *, io: DiskIO | None = None, clock: Clock | None = None
    ) -> None:
        """Open (or create) the store directory ``config.file_path``.

        ``io`` replaces the file-system layer (``evstate.testing.FaultyIO`` in tests);
        ``clock`` the wall clock (ms since the epoch; see ``Store.expire``).

        Raises:
            StoreLockedError: another process has the directory open.
            CorruptionError: the log is damaged beyond a torn tail.
            StorageError: the directory cannot be created, read or locked.
        """
        self._io = io = io or DiskIO()
        path = os.path.abspath(config.file_path)
        try:
            io.makedirs(path)
        except OSError as exc:
            raise StorageError(f"cannot create store directory {path}: {exc}") from exc
        if not os.path.isdir(path):
            raise StorageError(f"{path} is not a directory")
        self._path = path
        self._lock = DirectoryLock(path, io)
        self._log: SegmentLog | None = None
        try:
            self._open_files(config, io, clock)
        except BaseException:
            if self._log is not None:
                self._log.close()
            self._lock.release()
            raise

    def _open_files(self, config: Config, io: DiskIO, clock: Clock | None) -> None:
        self._write_lock = threading.Lock()
        self._timeline = timeline = FileTimeline(
            self._path, io, self._write_lock, lambda: self._revision
        )
        self._revision = 0
        base, timestamp, scopes, snapshot_cursors = load_newest_snapshot(
            self._path, io, timeline._note
        )
        recovered = {name: (cursor, base) for name, cursor in snapshot_cursors.items()}
        table = StateTable()
        table.load(scopes)
        self._snapshot_revision = base
        self._snapshot_bytes = newest_snapshot_bytes(self._path, io, base)
        self._snapshot_mark = 0  # the log's tail_bytes when the newest snapshot was taken
        self._log = segment_log = SegmentLog(
            self._path,
            segment_size=config.segment_size_bytes,
            fsync=config.fsync,
            fsync_interval_ms=config.fsync_interval_ms,
            io=io,
        )
        timeline.key_index_feed = segment_log.key_indexes.record
        apply = table.apply
        for record in segment_log.recover(after=base, must_reach=read_head(self._path, io)):
            apply(record)
            timestamp = record.timestamp
        for name, (cursor, source) in segment_log.recovered_cursors.items():
            if cursor >= recovered.get(name, (-1, 0))[0]:
                recovered[name] = (cursor, source)
        self._revision = segment_log.head_revision
        self._cursors = cursors = FileCursors(self, self._path, io, recovered, segment_log.flush)
        self._start(
            config,
            table=table,
            revision=segment_log.head_revision,
            timestamp=timestamp,
            source=timeline,
            journal=segment_log,
            cursors=cursors,
            clock=clock,
        )

    # ---- properties -----------------------------------------------------------------

    @property
    def path(self) -> str:
        """The store directory."""
        return self._path

    @property
    def failure(self) -> str | None:
        """Why the store has failed closed (a failed fsync), or None (see ``Store``)."""
        return None if self._log is None else self._log.failure

    @property
    def recovery_notes(self) -> builtins.list[str]:
        """What recovery repaired or skipped at open (torn tails, bad snapshots, ...)."""
        notes = list(self._timeline.notes)
        if self._log is not None:
            notes += self._log.recovery_notes
        return notes

    # ---- snapshots and retention ----------------------------------------------------

    def snapshot(self) -> int:
        """Write a snapshot of the current state now; returns its revision.

        Writers are paused only to copy the table's dictionaries (no value is copied or
        encoded under the lock) and to seal the active segment (fsynced: a snapshot never
        gets ahead of a durable log); encoding and writing run outside the lock. The
        snapshot is durable (fsynced, renamed, directory fsynced) when this returns. The
        background snapshots come only when the log written since the last one is worth it
        (:meth:`_snapshot_due`), so segments are never smaller than that.
        """
        self._check_open()
        segment_log = self._log
        assert segment_log is not None
        with self._snapshot_lock:
            started = time.perf_counter()
            with self._write_lock:
                revision = self._revision
                if revision == self._snapshot_revision:
                    return revision
                scopes = self._table.scope_map()
                cursors = self._cursors.cursors()
                timestamp = self._last_timestamp
                mark = segment_log.tail_bytes
                segment_log.roll_now()
            path = save_snapshot(self._path, self._io, revision, timestamp, scopes, cursors)
            SNAPSHOT_SECONDS.observe(time.perf_counter() - started)  # /metrics
            self._snapshot_revision = revision
            self._snapshot_bytes = file_size(path)
            self._snapshot_mark = mark
            return revision

    def _snapshot_due(self) -> bool:
        """Whether the log written since the newest snapshot is worth a new one.

        It is once it is as large as that snapshot (or ``SNAPSHOT_MIN_LOG_BYTES``): the next
        open then replays at most about one snapshot's worth of log, and a store that
        changes slowly does not write its whole state for every few events.
        """
        segment_log = self._log
        assert segment_log is not None
        since = segment_log.tail_bytes - self._snapshot_mark
        return since >= max(SNAPSHOT_MIN_LOG_BYTES, self._snapshot_bytes)

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: delete history older than it allows.

        Only segments wholly older than the horizon *and* covered by a snapshot go; the
        current state and every revision from the new horizon on stay answerable. Safe to
        call while writers write. Returns what was removed and the new ``horizon_revision``.
        """
        self._check_open()
        segment_log = self._log
        assert segment_log is not None
        with self._snapshot_lock:
            cutoff = self._retention_cutoff()
            result = compact_directory(
                self._path, self._io, segment_log, cutoff, self._forget_index
            )
        result["horizon_revision"] = self._timeline.horizon()
        return result

    def _forget_index(self) -> None:
        with self._write_lock:
            self._timeline.forget_index()  # rebuilt lazily from what remains

    def _maintenance_tick(self) -> None:
        if self._revision != self._snapshot_revision and self._snapshot_due():
            self.snapshot()
        self.compact()

    def _journal_durable(self) -> int:
        return self._log.durable_revision if self._log is not None else 0

    def _close_storage(self) -> None:
        try:
            super()._close_storage()  # the final fsync: raises if it failed
            try:
                write_head(self._path, self._io, self._journal_durable())
            except OSError as exc:  # a record for the next open's check, not the data
                log.warning("evstate: could not record the head in %s: %s", self._path, exc)
        finally:
            self._lock.release()


register_store_kind("file_based", FileStore)
