"""The :class:`Store` facade: lifecycle, the write path, and the state API.

Write path (docs/architecture.md): validate and encode outside the lock; under the write
lock read the old value, assign the next revision, append the event to the log, apply it
to the in-memory table; outside the lock, wait for the fsync the durability mode asks for;
then return. A write that fails anywhere before the append leaves nothing behind.
"""

from __future__ import annotations

import builtins
import fcntl
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from evstate.config import Config
from evstate.backends.file.diskio import DiskIO
from evstate.core.table import StateTable
from evstate.errors import (
    StorageError,
    StoreClosedError,
    StoreLockedError,
    ValueTooLargeError,
)
from evstate.events import CREATED, DELETED, UPDATED, EventRecord, encode_batch, encode_record
from evstate.backends.file.log import SegmentLog
from evstate.ops import apply_update_ops, parse_ops
from evstate.backends.file.store_history import HistoryMethods, check_name
from evstate.backends.file.store_triggers import FEED_CAPACITY, TriggerMethods
from evstate.backends.file.timeline import FileTimeline, MemoryTimeline, Timeline
from evstate.core.triggers import TriggerManager
from evstate.values import decode_value, encode_value, json_size, validate_value

__all__ = ["Store"]

LOCK_FILE = "LOCK"
log = logging.getLogger("evstate")


class _DirectoryLock:
    """An exclusive ``flock`` on ``<dir>/LOCK``; the kernel drops it if the owner dies."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, LOCK_FILE)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            finally:
                os.close(self.fd)
            raise StoreLockedError(
                f"{directory} is open for writing by another process or Store"
                + (f" (pid {owner})" if owner else "")
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor drops the flock


class Store(TriggerMethods, HistoryMethods):
    """An evstate store: state by scope and key, every change an event in the log.

    Open one with :func:`evstate.open`. Thread-safe: any number of threads may call one
    ``Store``. Writes are serialized (each is atomic); reads never wait for writes.
    Values are JSON-compatible data; what you pass in and what you get back are copies.

    Durability of a returned write depends on ``config.fsync`` (docs/config.md): under
    ``always`` (default) it is on stable storage; under ``interval`` it survives a process
    crash and is fsynced within ``fsync_interval_ms``; under ``never`` it survives a process
    crash. :meth:`flush` and :meth:`close` make every acknowledged write durable.
    """

    def __init__(self, config: Config, *, io: DiskIO | None = None) -> None:
        """Open the store ``config`` describes (use :func:`evstate.open` instead).

        Raises:
            StoreLockedError: another process has the directory open.
            CorruptionError: the log is damaged beyond a torn tail.
            StorageError: the directory cannot be created or read.
        """
        self._config = config
        self._table = StateTable()
        self._write_lock = threading.Lock()
        self._revision = 0
        self._last_timestamp = 0
        self._closed = False
        self._lock: _DirectoryLock | None = None
        self._log: SegmentLog | None = None
        self._path: str | None = None
        self._snapshot_lock = threading.Lock()
        self._snapshot_revision = 0
        # trigger cursors from the snapshot and the log: name -> (cursor, source revision)
        self._recovered_cursors: dict[str, tuple[int, int]] = {}
        self._io = io
        self._timeline: Timeline
        if config.store_method == "file_based":
            self._open_files(config, io)
        else:
            self._timeline = MemoryTimeline()
        self._visible = self._revision
        self._feed_view: tuple[int, builtins.list[EventRecord]] = (self._revision + 1, [])
        self._triggers = TriggerManager(
            self,
            directory=self._path,
            io=self._io,
            recovered=self._recovered_cursors,
            enabled=config.triggers_enabled,
        )
        self._stop = threading.Event()
        self._maintainer = threading.Thread(
            target=self._maintenance_loop, name="evstate-snapshotter", daemon=True
        )
        self._maintainer.start()

    def _open_files(self, config: Config, io: DiskIO | None) -> None:
        path = os.path.abspath(config.file_path)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create store directory {path}: {exc}") from exc
        if not os.path.isdir(path):
            raise StorageError(f"{path} is not a directory")
        self._path = path
        self._lock = _DirectoryLock(path)
        io = self._io = io or DiskIO()
        try:
            timeline = FileTimeline(path, io, self._write_lock)
            self._timeline = timeline
            base, timestamp, scopes, snapshot_cursors = timeline.load_newest_snapshot()
            self._recovered_cursors = {n: (c, base) for n, c in snapshot_cursors.items()}
            self._table.load(scopes)
            self._snapshot_revision = base
            self._log = SegmentLog(
                path,
                segment_size=config.segment_size_bytes,
                fsync=config.fsync,
                fsync_interval_ms=config.fsync_interval_ms,
                io=io,
            )
            apply = self._table.apply
            for record in self._log.recover(after=base):
                apply(record)
                timestamp = record.timestamp
            timeline.attach(self._log)
            for name, (cursor, source) in self._log.recovered_cursors.items():
                if cursor >= self._recovered_cursors.get(name, (-1, 0))[0]:
                    self._recovered_cursors[name] = (cursor, source)
            self._revision = self._log.head_revision
            self._last_timestamp = timestamp
        except BaseException:
            if self._log is not None:
                self._log.close()
            self._lock.release()
            raise

    # ---- properties -----------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration this store was opened with."""
        return self._config

    @property
    def path(self) -> str | None:
        """The store directory, or ``None`` for an in-memory store."""
        return self._path

    @property
    def revision(self) -> int:
        """The revision of the newest event (0 for an empty store)."""
        return self._revision

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def recovery_notes(self) -> builtins.list[str]:
        """What recovery repaired or skipped at open (torn tails, bad snapshots, ...)."""
        if self._log is None or not isinstance(self._timeline, FileTimeline):
            return []
        return list(self._timeline.notes) + list(self._log.recovery_notes)

    # ---- the write path -------------------------------------------------------------

    def _next_timestamp(self) -> int:
        now = time.time_ns() // 1_000_000
        return now if now > self._last_timestamp else self._last_timestamp

    def _applied(self, records: builtins.list[EventRecord], segment: int, offset: int) -> None:
        """Apply appended records to the table, the timeline and the feed (write lock held)."""
        for record in records:
            self._timeline.recorded(record, segment, offset)
            if record.new is None:
                self._table.remove(record.scope, record.key)
            else:
                self._table.put(record.scope, record.key, record.new)
        self._feed_append(records)
        self._revision = records[-1].revision
        self._last_timestamp = records[-1].timestamp
        if self._log is None or self._config.fsync != "always":
            self._visible = self._revision

    def _commit(
        self, scope: str, key: str, type_code: int, old: bytes | None, new: bytes | None
    ) -> int:
        """Append and apply one event. Caller holds the write lock. Returns the revision.

        The single-event twin of :meth:`_applied`, inlined: this is the hot path.
        """
        revision = self._revision + 1
        now = time.time_ns() // 1_000_000
        timestamp = now if now > self._last_timestamp else self._last_timestamp
        record = EventRecord(revision, timestamp, type_code, scope, key, old, new)
        segment = offset = 0
        log = self._log
        if log is not None:
            # check_writable is inside append: a failed fsync refuses the write here
            segment, offset = log.append(encode_record(record), revision)
        self._timeline.recorded(record, segment, offset)
        if new is None:
            self._table.remove(scope, key)
        else:
            self._table.put(scope, key, new)
        feed = self._feed_view[1]
        feed.append(record)
        if len(feed) > 2 * FEED_CAPACITY:
            self._feed_append([])
        self._revision = revision
        self._last_timestamp = timestamp
        if log is None or self._config.fsync != "always":
            self._visible = revision
        return revision

    def _commit_batch(
        self, writes: builtins.list[tuple[Any, ...]], cursor: tuple[str, int]
    ) -> None:
        """Commit a trigger handler's writes and its cursor advance as ONE log record.

        ``writes`` are ``("set", scope, key, encoded)``, ``("update", scope, key, parsed
        ops)`` or ``("delete", scope, key, None)``; updates are applied to the state current
        now. Durable per ``fsync`` on return.
        """
        with self._write_lock:
            self._check_open()
            if self._log is not None:
                self._log.check_writable()
            timestamp = self._next_timestamp()
            revision = self._revision
            overlay: dict[tuple[str, str], bytes | None] = {}
            records: builtins.list[EventRecord] = []
            for kind, scope, key, arg in writes:
                old = (
                    overlay[(scope, key)]
                    if (scope, key) in overlay
                    else self._table.get(scope, key)
                )
                if kind == "set":
                    new: bytes | None = arg
                elif kind == "update":
                    current = {} if old is None else decode_value(old)
                    new = encode_value(apply_update_ops(current, arg, missing=old is None)[0])
                else:
                    new = None
                type_code = DELETED if new is None else (CREATED if old is None else UPDATED)
                revision += 1
                records.append(EventRecord(revision, timestamp, type_code, scope, key, old, new))
                overlay[(scope, key)] = new
            segment = offset = 0
            if self._log is not None:
                payload = encode_batch(records, cursor)
                segment, offset = self._log.append(payload, records[0].revision, revision)
            self._applied(records, segment, offset)
        self._acknowledge(revision)

    def _acknowledge(self, revision: int) -> None:
        log = self._log
        if log is not None and self._config.fsync == "always":
            log.wait_durable(revision)
            durable = log.durable_revision
            if durable > self._visible:
                self._visible = min(durable, self._revision)
        if self._triggers._active:
            self._triggers.notify()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Replace the value of ``scope/key``.

        Returns:
            ``{"old_value": <previous value or None>, "new_value": value}``.

        Raises:
            InvalidRequestError: ``scope`` or ``key`` is not a ``str``.
            InvalidValueError: ``value`` is not JSON-compatible (names the path).
            ValueTooLargeError: over ``max_value_bytes`` (code ``VALUE_TOO_LARGE``).
            StorageError, StoreFailedError, StoreClosedError.
        Nothing is written when it raises before the append.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        if type(scope) is not str or type(key) is not str:
            check_name("scope", scope)
            check_name("key", key)
        validate_value(value)
        limit = self._config.max_value_bytes
        if limit is not None:
            size = json_size(value)
            if size > limit:
                raise ValueTooLargeError(
                    f"value of {size} bytes exceeds the configured max_value_bytes limit of {limit}"
                )
        new = encode_value(value)
        with self._write_lock:
            if self._closed:
                raise StoreClosedError("the store is closed")
            old = self._table.get(scope, key)
            revision = self._commit(scope, key, CREATED if old is None else UPDATED, old, new)
        self._acknowledge(revision)
        return {
            "old_value": None if old is None else decode_value(old),
            "new_value": decode_value(new),
        }

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Apply update ops to ``scope/key`` atomically (iii semantics, reference §3).

        Ops run in order; a failing op is skipped and reported, the others apply. A missing
        key starts from ``{}`` and is created. ``ops`` is a list of :class:`UpdateOp` or
        wire dicts.

        Returns:
            ``{"old_value", "new_value"}`` plus ``"errors"`` (a list of
            ``{op_index, code, message, doc_url}``) only when an op failed.

        Raises:
            InvalidRequestError: malformed ops (the whole call fails, nothing written).
            StorageError, StoreFailedError, StoreClosedError.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        parsed = parse_ops(ops)
        with self._write_lock:
            self._check_open()
            if self._log is not None:
                self._log.check_writable()
            old = self._table.get(scope, key)
            current = {} if old is None else decode_value(old)
            new_value, errors = apply_update_ops(current, parsed, missing=old is None)
            new = encode_value(new_value)
            revision = self._commit(scope, key, CREATED if old is None else UPDATED, old, new)
        self._acknowledge(revision)
        result: dict[str, Any] = {
            "old_value": None if old is None else decode_value(old),
            "new_value": decode_value(new),
        }
        if errors:
            result["errors"] = errors
        return result

    def delete(self, scope: str, key: str) -> Any:
        """Delete ``scope/key``; returns the deleted value, or ``None`` if it did not exist.

        A delete of a missing key still records a ``deleted`` event (as in iii).
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        with self._write_lock:
            self._check_open()
            if self._log is not None:
                self._log.check_writable()
            old = self._table.get(scope, key)
            revision = self._commit(scope, key, DELETED, old, None)
        self._acknowledge(revision)
        return None if old is None else decode_value(old)

    # ---- reads ----------------------------------------------------------------------

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        return self._table.get(scope, key)

    def get(self, scope: str, key: str) -> Any:
        """The value of ``scope/key`` (a fresh copy), or ``None`` if it does not exist."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        if type(scope) is not str or type(key) is not str:
            check_name("scope", scope)
            check_name("key", key)
        raw = self._table.get(scope, key)
        return None if raw is None else decode_value(raw)

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope``, in sorted key order (``{}`` if none)."""
        self._check_open()
        check_name("scope", scope)
        items = self._table.items(scope)
        return {key: decode_value(items[key]) for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in key insertion order (iii ``state::list``)."""
        self._check_open()
        check_name("scope", scope)
        return [decode_value(raw) for raw in self._table.items(scope).values()]

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}``: sorted scopes holding at least one key."""
        self._check_open()
        return {"groups": self._table.scopes()}

    def call(self, function_id: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Call a state function by id, like the doc's ``client.call``.

        Accepts ``state::set`` and ``state.set`` spellings of the six functions (see
        :mod:`evstate.core.functions`). Raises :class:`evstate.Error` subclasses whose ``code``
        is the iii error code.
        """
        from evstate.core.functions import call_function

        return call_function(self, function_id, {} if payload is None else payload)

    # ---- lifecycle ------------------------------------------------------------------

    def flush(self) -> None:
        """Make every acknowledged write durable now (any fsync mode).

        Raises:
            StoreFailedError: the fsync failed.
        """
        self._check_open()
        if self._log is not None:
            self._log.flush()

    def close(self) -> None:
        """Make every acknowledged write durable, then release the directory. Idempotent.

        Raises:
            StoreFailedError: the final fsync failed (the store is closed anyway).
        """
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._maintainer is not threading.current_thread():
            self._maintainer.join()
        try:
            self._triggers.close()
        except Exception:  # the log close below still makes acknowledged writes durable
            log.exception("evstate: closing triggers failed")
        try:
            if self._log is not None:
                self._log.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._path or "in-memory"
        state = "closed" if self._closed else f"revision={self._revision}"
        return f"<evstate.Store {where} {state}>"
