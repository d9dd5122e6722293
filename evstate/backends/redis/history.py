"""The audit half of :class:`~evstate.backends.redis.store.RedisStore`: snapshots, retention, PITR.

The same methods, arguments, results and errors as the file store's
:class:`~evstate.backends.file.store_history.HistoryMethods`, answered from the event stream and the
snapshots kept in Redis (:mod:`evstate.backends.redis.timeline`). A mixin that only ``RedisStore`` uses.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from evstate.config import Config, retention_limits
from evstate.errors import HistoryCompactedError, InvalidRequestError, StorageError
from evstate.events import Event
from evstate.backends.redis.client import Backend, LogEntry, load_value
from evstate.backends.redis.timeline import RedisTimeline, Texts
from evstate.backends.redis.triggers import RedisTriggerManager
from evstate.backends.file.snapshot import check_restore_target, write_restored_store
from evstate.backends.file.store_history import check_name, time_ms
from evstate.values import encode_value
from evstate.core.view import StateView

__all__ = ["RedisHistoryMethods", "check_name", "to_event"]

log = logging.getLogger("evstate")
PERIODIC_SLACK = 1000  # background compaction waits until it can drop this many events


def _compacted(revision: int, horizon: int) -> HistoryCompactedError:
    return HistoryCompactedError(
        f"revision {revision} is before the retention horizon (revision {horizon})",
        horizon=horizon,
    )


def to_event(entry: LogEntry) -> Event:
    """The public :class:`Event` of a stream entry (fresh values every call)."""
    where = f"revision {entry.revision}"
    return Event(
        revision=entry.revision,
        timestamp=entry.timestamp,
        event_type=entry.event_type,
        scope=entry.scope,
        key=entry.key,
        old_value=None if entry.old is None else load_value(entry.old, where),
        new_value=None if entry.new is None else load_value(entry.new, where),
    )


def _cbor_scopes(texts: Texts) -> dict[str, dict[str, bytes]]:
    return {
        scope: {key: encode_value(load_value(text)) for key, text in keys.items()}
        for scope, keys in texts.items()
    }


class RedisHistoryMethods:
    """Snapshot, retention, history and point-in-time methods of the redis store."""

    _config: Config
    _backend: Backend
    _timeline: RedisTimeline
    _triggers: RedisTriggerManager
    _stop: threading.Event

    def _check_open(self) -> None:
        raise NotImplementedError

    def _head(self) -> int:
        raise NotImplementedError

    # ---- snapshots and retention ----------------------------------------------------

    def snapshot(self) -> int:
        """Write a snapshot of the state at the current head into Redis; returns its revision.

        Built by replaying the stream from the previous snapshot, so it is exact even while
        other processes write; the live hashes are not read. Returns the head unchanged when
        the newest snapshot already covers it.
        """
        self._check_open()
        return self._timeline.snapshot()

    def _retention_cutoff(self) -> int:
        """Newest revision the retention policy lets go of (0: keep everything).

        Triggers registered by any process (heartbeat within 3 leases) pin their cursors.
        """
        max_revisions, max_age = retention_limits(self._config.retention)
        head = self._head()
        cutoff = 0
        if max_revisions is not None:
            cutoff = max(cutoff, head - max_revisions)
        if max_age is not None and head:
            seconds, micros = self._backend.run("read time", lambda c: c.time())
            now = int(seconds) * 1000 + int(micros) // 1000  # the clock the events carry
            cutoff = max(cutoff, self._timeline.first_revision_from_time(now - max_age, head) - 1)
        pin = self._triggers.min_registered_cursor()
        if pin is not None:
            cutoff = min(cutoff, pin)
        return min(cutoff, head)

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: history older than it allows is deleted.

        The state at the cutoff revision becomes a snapshot (the new horizon); the stream
        entries at or below it and older snapshots are deleted. Returns ``base``,
        ``events_deleted``, ``snapshots_deleted``, ``segments_deleted`` (always 0) and the
        new ``horizon_revision``.
        """
        self._check_open()
        result = self._timeline.compact(self._retention_cutoff(), slack=1)
        result["horizon_revision"] = self._timeline.horizon()
        return result

    def _maintenance_loop(self) -> None:
        interval = self._config.save_interval_ms / 1000.0
        while not self._stop.wait(interval):
            try:
                horizon = self._timeline.horizon()
                cutoff = self._retention_cutoff()
                slack = max(PERIODIC_SLACK, (self._head() - horizon) // 10)
                if cutoff - horizon >= slack:
                    self._timeline.compact(cutoff, slack=slack, wait=0)
            except StorageError as exc:  # unavailable or locked: the next tick tries again
                log.info("evstate: background compaction skipped: %s", exc)
            except Exception:
                log.exception("evstate: background compaction failed")

    def stats(self) -> dict[str, Any]:
        """Numbers about the store (the file store's keys, plus ``events_in_log``).

        ``segments`` is 0; ``log_bytes`` is Redis's estimate of the stream's memory;
        ``durable_revision`` equals ``revision`` (Redis acknowledged every event).
        """
        self._check_open()
        head = self._head()
        scopes = self._scope_sizes()
        result: dict[str, Any] = {
            "revision": head,
            "durable_revision": head,
            "keys": sum(scopes.values()),
            "scopes": len(scopes),
        }
        result.update(self._timeline.stats())
        return result

    def _scope_sizes(self) -> dict[str, int]:
        raise NotImplementedError

    # ---- audit and point-in-time ----------------------------------------------------

    def _revision_bound(self, bound: int | datetime | None, *, low: bool) -> int | None:
        if bound is None:
            return None
        if isinstance(bound, int) and not isinstance(bound, bool):
            return bound
        ms = time_ms(bound)
        head = self._head()
        if low:
            return self._timeline.first_revision_from_time(ms, head)
        return self._timeline.revision_at_time(ms, head)

    def history(
        self,
        scope: str,
        key: str,
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        """The events of ``scope/key``, oldest first (a scan of the retained stream).

        Raises:
            HistoryCompactedError: ``since`` is before the oldest retained event.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        oldest = self._timeline.oldest_revision()
        low = self._revision_bound(since, low=True)
        if low is not None and low < oldest and (since != 0 or oldest > 1):
            raise _compacted(low, oldest)
        high = self._revision_bound(until, low=False)
        entries = self._timeline.key_entries(
            scope, key, max(low or 0, oldest), self._head() if high is None else high
        )
        if limit is not None:
            entries = entries[: max(limit, 0)]
        return [to_event(entry) for entry in entries]

    def events(
        self,
        start: int | datetime | None = None,
        end: int | datetime | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
    ) -> Iterator[Event]:
        """Iterate over the retained stream lazily (pages of 1000 entries), oldest first.

        Raises:
            HistoryCompactedError: ``start`` is before the oldest retained event.
        """
        self._check_open()
        oldest = self._timeline.oldest_revision()
        low = self._revision_bound(start, low=True)
        if low is not None and low < oldest and low > 0 and oldest > 1:
            raise _compacted(low, oldest)
        high = self._revision_bound(end, low=False)
        head = self._head()
        return self._iter_events(
            max(low or 0, oldest), head if high is None else min(high, head), scope, key
        )

    def _iter_events(
        self, low: int, high: int, scope: str | None, key: str | None
    ) -> Iterator[Event]:
        for entry in self._timeline.entries(low, high):
            if (scope is None or entry.scope == scope) and (key is None or entry.key == key):
                yield to_event(entry)

    def _resolve_revision(self, revision: int | None, when: datetime | float | None) -> int:
        if revision is not None and when is not None:
            raise InvalidRequestError("give a revision or a time, not both")
        head = self._head()
        if when is not None:
            return self._timeline.revision_at_time(time_ms(when), head)
        if revision is None:
            return head
        if type(revision) is not int or revision < 0:
            raise InvalidRequestError(f"revision must be an int >= 0, got {revision!r}")
        return min(revision, head)

    def at(self, revision: int | None = None, time: datetime | float | None = None) -> StateView:
        """A read-only view of the state exactly as of ``revision`` or ``time``.

        Rebuilt from the newest snapshot at or before it plus replay of the stream.

        Raises:
            HistoryCompactedError: before the retention horizon (``.horizon`` names it).
        """
        self._check_open()
        target = self._resolve_revision(revision, time)
        horizon = self._timeline.horizon()
        if target < horizon:
            raise _compacted(target, horizon)
        scopes = _cbor_scopes(self._timeline.state_at(target))
        entry = self._timeline.entry(target) if target else None
        return StateView(target, entry.timestamp if entry else None, scopes, self.history)

    def restore_to(
        self,
        path: str | os.PathLike[str],
        revision: int | None = None,
        time: datetime | float | None = None,
    ) -> str:
        """Write a new, independent **file store** directory holding the state at that point.

        Open it with ``evstate.open(path)``. Revisions continue the numbering.

        Raises:
            HistoryCompactedError: before the retention horizon.
            StorageError: ``path`` exists and is not empty, or cannot be written.
        """
        view = self.at(revision, time)
        target = check_restore_target(path)
        return write_restored_store(target, view.revision, view.timestamp or 0, view._scopes)

    def verify(self) -> builtins.list[str]:
        """Check the store; returns the problems found (empty when healthy).

        Checks stream continuity and entry shapes, every snapshot's checksums, and that
        newest snapshot + replay, a full replay from the oldest retained point and the live
        hashes agree. Reads the whole state in one script: Redis pauses for its duration.
        """
        self._check_open()
        return self._timeline.verify()
