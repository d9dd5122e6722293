"""The :class:`Store`: state by scope and key, every change an event in the log.

This is the store that keeps its state in this process: the write path, the reads, the
trigger host and the audit API. Where the events go is a :class:`Journal` (the file store's
segment log; none for the memory store); where history is read from, a log source. The
backends (:mod:`evstate.backends.file`, :mod:`evstate.backends.memory`) provide those, plus
what only they have (a directory lock, snapshots, compaction).

Write path (docs/architecture.md): validate and encode outside the lock; under the write
lock read the old value, assign the next revision, append the event to the journal, apply
it to the in-memory table; outside the lock, wait for the fsync the durability mode asks
for; then return. A write that fails anywhere before the append leaves nothing behind.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from evstate.config import Config
from evstate.core.arguments import check_name, check_names
from evstate.core.audit import AuditMethods
from evstate.core.batch import BatchMethods
from evstate.core.commit import CommitPath
from evstate.core.expirer import ExpiryMethods
from evstate.core.feed import RecordFeed
from evstate.core.journal import History, Journal
from evstate.core.lifecycle import Clock, StoreBase, wall_clock_ms
from evstate.core.listing import Listings
from evstate.core.reads import TableReads
from evstate.core.replay import Scopes
from evstate.core.retention import retention_cutoff
from evstate.core.table import StateTable
from evstate.core.triggers.api import TriggerMethods
from evstate.core.triggers.cursors import CursorStore
from evstate.core.triggers.manager import TriggerManager
from evstate.core.writes import (
    Write,
    check_ttl,
    encode_checked,
    expected_matches,
    keep_deadline,
    update_result,
)
from evstate.errors import ConfigError, StoreClosedError
from evstate.events import EventRecord
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from evstate.values import (
    DEADLINE_MARK,
    decode_value,
    encode_value,
    validate_value,
)

__all__ = ["Store", "register_store_kind"]


_STORE_KINDS: dict[str, type[Store]] = {}


def register_store_kind(store_method: str, kind: type[Store]) -> None:
    """Make ``Store(config)`` open ``kind`` when ``config.store_method`` is ``store_method``.

    Each backend registers itself when imported (``import evstate`` imports them all).
    """
    _STORE_KINDS[store_method] = kind


_MARK = bytes([DEADLINE_MARK])


class Store(
    StoreBase, CommitPath, BatchMethods, ExpiryMethods, TableReads, AuditMethods, TriggerMethods
):
    """An evstate store: state by scope and key, every change an event in the log.

    Open one with :func:`evstate.open`. Thread-safe: any number of threads may call one
    ``Store``. Writes are serialized (each is atomic); reads never wait for writes.
    Values are JSON-compatible data; what you pass in and what you get back are copies.

    Durability of a returned write depends on ``config.fsync`` (docs/config.md): under
    ``always`` (default) it is on stable storage; under ``interval`` it survives a process
    crash and is fsynced within ``fsync_interval_ms``; under ``never`` it survives a process
    crash. :meth:`flush` and :meth:`close` make every acknowledged write durable. A memory
    store keeps nothing after :meth:`close`.
    """

    _source: History

    def __new__(cls, config: Config | None = None, *args: Any, **kwargs: Any) -> Store:
        """``Store(config, io=...)`` opens the kind of store ``config.store_method`` names."""
        if cls is Store:
            method = config.store_method if config is not None else "in_memory"
            kind = _STORE_KINDS.get(method)
            if kind is None:
                raise ConfigError([f"store_method: no store kind {method!r} is available"])
            return super().__new__(kind)
        return super().__new__(cls)

    def _start(
        self,
        config: Config,
        *,
        table: StateTable,
        revision: int,
        timestamp: int,
        source: History,
        journal: Journal | None,
        cursors: CursorStore,
        clock: Clock | None = None,
    ) -> None:
        """Set up the recovered state and start the background threads (backends call it).

        ``clock`` (ms since the epoch) replaces the wall clock for event timestamps and
        deadlines; with one, no background expirer runs (call :meth:`expire`).
        """
        self._config = config
        self._clock: Clock = clock or wall_clock_ms
        self._table = table
        self._revision = revision
        self._last_timestamp = timestamp
        self._source = source
        self._journal = journal
        self._write_lock = getattr(self, "_write_lock", None) or threading.Lock()
        self._close_lock = self._write_lock  # a write and close never interleave
        self._table_lock = self._write_lock
        self._listings = Listings(config.max_open_listings, config.listing_idle_ms)
        self._snapshot_lock = threading.Lock()
        self._closed = False
        self._always = journal is not None and config.fsync == "always"
        self._visible = revision
        self._feed = RecordFeed(revision + 1)
        self._triggers = TriggerManager(self, cursors, enabled=config.triggers_enabled)
        self._start_maintenance("evstate-maintenance")
        self._start_expirer(background=clock is None)

    # ---- properties -----------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The store directory, or ``None`` for an in-memory store."""
        return None

    @property
    def revision(self) -> int:
        """The revision of the newest event (0 for an empty store)."""
        return self._revision

    @property
    def recovery_notes(self) -> builtins.list[str]:
        """What recovery repaired or skipped at open (torn tails, bad snapshots, ...)."""
        return []

    # ---- the write path -------------------------------------------------------------

    def _encode_checked(self, value: Any) -> bytes:
        return encode_checked(value, self._config.max_value_bytes)

    def set(self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None) -> dict[str, Any]:
        """Replace the value of ``scope/key``.

        ``ttl_ms`` (a positive int) makes the key expire that many milliseconds after this
        write; without it the key has no time-to-live (a ``set`` clears one, as Redis's
        ``SET`` does).

        Returns:
            ``{"old_value": <previous value or None>, "new_value": value}``.

        Raises:
            InvalidRequestError: ``scope`` or ``key`` is not a ``str``, or a bad ``ttl_ms``.
            InvalidValueError: ``value`` is not JSON-compatible (names the path).
            ValueTooLargeError: over ``max_value_bytes`` (code ``VALUE_TOO_LARGE``).
            StorageError, StoreFailedError, StoreClosedError.
        Nothing is written when it raises before the append.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        check_names(scope, key)
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        new = encode_checked(value, self._config.max_value_bytes)
        with self._write_lock:
            if self._closed:
                raise StoreClosedError("the store is closed")
            old = self._table.get(scope, key)
            if old is not None and old[:1] == _MARK:
                old = self._current(scope, key)
            revision = self._commit(scope, key, old, new, ttl_ms)
        self._acknowledge(revision)
        if ttl_ms is not None:
            self._wake_expirer(self._last_timestamp + ttl_ms)
        return {
            "old_value": None if old is None else decode_value(old),
            "new_value": decode_value(new),
        }

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Apply update ops to ``scope/key`` atomically (the iii engine's rules).

        Ops run in order; a failing op is skipped and reported, the others apply. A missing
        key starts from ``{}`` and is created. A key's time-to-live is kept. ``ops`` is a
        list of :class:`UpdateOp` or wire dicts.

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
            if self._journal is not None:
                self._journal.check_writable()
            old = self._current(scope, key)
            current = {} if old is None else decode_value(old)
            new_value, errors = apply_update_ops(current, parsed, missing=old is None)
            new = keep_deadline(old, encode_value(new_value))
            revision = self._commit(scope, key, old, new)
        self._acknowledge(revision)
        return update_result(None if old is None else decode_value(old), decode_value(new), errors)

    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]:
        """Set ``scope/key`` to ``value`` only if it holds ``expected`` (iii's compare-and-set).

        ``expected`` ``None`` means "only if the key is absent" (an expired key is absent).
        Equality is JSON equality (key order does not matter, ``1 == 1.0``, ``true`` is not
        ``1``). ``ttl_ms`` as for :meth:`set` (without it a swap clears any TTL).

        Returns:
            ``{"swapped": True}`` when it wrote (an ordinary ``created``/``updated`` event);
            ``{"swapped": False, "current": <the value there, None if absent>}`` when it
            did not (nothing is written, no event).

        Raises:
            As :meth:`set` does; also InvalidValueError when ``expected`` is not JSON data.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        expected_encoded = None
        if expected is not None:
            validate_value(expected, where="expected")
            expected_encoded = encode_value(expected)
        new = encode_checked(value, self._config.max_value_bytes)
        with self._write_lock:
            self._check_open()
            if self._journal is not None:
                self._journal.check_writable()
            old = self._current(scope, key)
            if not expected_matches(old, expected, expected_encoded):
                return {"swapped": False, "current": None if old is None else decode_value(old)}
            revision = self._commit(scope, key, old, new, ttl_ms)
        self._acknowledge(revision)
        if ttl_ms is not None:
            self._wake_expirer(self._last_timestamp + ttl_ms)
        return {"swapped": True}

    def _commit_batch(self, writes: Sequence[Write]) -> builtins.list[EventRecord]:
        records = self._commit_writes(writes)
        if any(write.ttl_ms is not None for write in writes):
            self._wake_expirer()
        return records

    def delete(self, scope: str, key: str) -> Any:
        """Delete ``scope/key``; returns the deleted value, or ``None`` if it did not exist.

        A delete of a missing key still records a ``deleted`` event (as in iii).
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        with self._write_lock:
            self._check_open()
            if self._journal is not None:
                self._journal.check_writable()
            old = self._current(scope, key)
            revision = self._commit(scope, key, old, None)
        self._acknowledge(revision)
        return None if old is None else decode_value(old)

    # ---- what triggers and the audit read ----------------------------------------------

    def _visible_revision(self) -> int:
        """The newest revision triggers may see.

        Acknowledged (and, under ``fsync: always``, durable), so a handler never sees a
        write that could still be lost.
        """
        return self._visible

    def _records(self, low: int, high: int) -> Iterator[EventRecord]:
        return self._feed.records(low, high, self._source)

    def _oldest_revision(self) -> int:
        return self._source.oldest_revision()

    def _audit_head(self) -> int:
        return self._revision

    def _live_state(self) -> tuple[int, Scopes]:
        with self._write_lock:
            return self._revision, self._table.scope_map()

    # ---- snapshots, retention, numbers ------------------------------------------------

    def snapshot(self) -> int:
        """Write a snapshot of the current state now; returns its revision.

        A memory store has nothing to write and returns the revision.
        """
        self._check_open()
        return self._revision

    def _retention_cutoff(self) -> int:
        """The newest revision the retention policy lets go of (0: keep everything)."""
        return retention_cutoff(
            self._config.retention,
            self._revision,
            time.time_ns() // 1_000_000,
            self._source.first_revision_from_time,
            self._triggers.pin(),
        )

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: delete history older than it allows.

        The current state and every revision from the new horizon on stay answerable. Safe
        to call while writers write. Returns what was removed and the new
        ``horizon_revision``.
        """
        raise NotImplementedError

    def _maintenance_tick(self) -> None:
        self.compact()

    def stats(self) -> dict[str, Any]:
        """Numbers about the store: revisions, keys, files, sizes, the retained range.

        Keys: ``revision``, ``durable_revision``, ``keys``, ``scopes``, ``segments``,
        ``log_bytes``, ``snapshots``, ``snapshot_bytes``, ``last_snapshot_revision``,
        ``oldest_revision`` and ``oldest_timestamp`` (the oldest retained event),
        ``horizon_revision`` (the oldest revision :meth:`at` can answer), ``index_built``.
        """
        self._check_open()
        journal = self._journal
        result: dict[str, Any] = {
            "revision": self._revision,
            "durable_revision": journal.durable_revision if journal else self._revision,
            "keys": self._table.key_count(),
            "scopes": len(self._table.scopes()),
        }
        result.update(self._source.stats())
        return result

    # ---- lifecycle ------------------------------------------------------------------

    def flush(self) -> None:
        """Make every acknowledged write durable now (any fsync mode).

        Raises:
            StoreFailedError: the fsync failed.
        """
        self._check_open()
        if self._journal is not None:
            self._journal.flush()

    def _stop_maintenance(self) -> None:
        super()._stop_maintenance()
        self._stop_expirer()

    def _close_storage(self) -> None:
        """Close the journal (its final fsync) and what the backend holds."""
        if self._journal is not None:
            self._journal.close()

    def __repr__(self) -> str:
        where = self.path or "in-memory"
        state = "closed" if self._closed else f"revision={self._revision}"
        return f"<evstate.Store {where} {state}>"
