"""The trigger half of :class:`~evstate.backends.file.store.Store`: public API and runner support.

The public trigger methods, and what the trigger runners need from the store (the event
feed, visibility, batch commits).

Delivery semantics: docs/triggers.md. A mixin that only the store uses; it relies on the
attributes the store sets up (declared below for the type checker).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from typing import Any

from evstate.events import EventRecord
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.timeline import Timeline
from evstate.core.triggers import Handler, Trigger, TriggerManager, register_or_decorate

__all__ = ["FEED_CAPACITY", "TriggerMethods"]

FEED_CAPACITY = 65_536  # recent records kept in memory for live delivery


class TriggerMethods:
    """Public trigger methods and the trigger host interface of the store."""

    _log: SegmentLog | None
    _timeline: Timeline
    _triggers: TriggerManager
    _write_lock: threading.Lock
    _revision: int
    _visible: int
    # (revision of the first record, records): one attribute, so a reader gets a consistent
    # pair without a lock; writers append under the write lock and replace it to trim.
    _feed_view: tuple[int, builtins.list[EventRecord]]

    def _check_open(self) -> None:
        raise NotImplementedError

    # ---- public API -------------------------------------------------------------------

    def trigger(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        condition: Handler | None = None,
        start: str | int = "latest",
    ) -> Any:
        """Register a durable state trigger; usable as a decorator.

        ``name`` is the trigger's durable identity: its cursor survives restarts, and
        registering the same name again resumes after the last event it processed (``start``
        only applies to a name seen for the first time: ``"latest"`` = events after now,
        ``"earliest"`` = all retained history, or a revision to start at).

        ``handler(event)`` and ``condition(event)`` may be sync or async. The handler runs
        for events matching ``scope`` and ``key`` (exact, ``None`` = any) for which
        ``condition`` is truthy. It receives a :class:`~evstate.core.triggers.TriggerEvent`;
        writes through ``event.store`` commit atomically with the cursor advance.

        Returns the :class:`~evstate.core.triggers.Trigger` handle, or, used as
        ``@store.trigger("name", ...)``, the decorated function unchanged.

        Raises:
            InvalidRequestError: bad arguments, or the name is already registered.
            HistoryCompactedError: the name's cursor (or ``start``) is before the retained
                history.
        """
        self._check_open()

        def register(fn: Handler) -> Trigger:
            return self._triggers.register(
                name, fn, scope=scope, key=key, condition=condition, start=start
            )

        return register_or_decorate(register, handler)

    def unregister_trigger(self, name: str, *, wait: bool = True) -> None:
        """Stop delivering to ``name``; its cursor is kept (registering again resumes).

        ``wait=False`` returns without waiting for an in-flight handler call to end.
        """
        self._triggers.unregister(name, wait=wait)

    def delete_trigger(self, name: str) -> None:
        """Unregister ``name`` and forget its cursor and parked events."""
        self._triggers.delete(name)

    def replay_trigger(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so that delivery continues at ``from_revision``.

        Raises:
            HistoryCompactedError: ``from_revision`` is before the retained history.
        """
        self._triggers.replay(name, from_revision)

    def wait_for_triggers(self, revision: int | None = None, timeout: float | None = None) -> None:
        """Return once every registered trigger has processed up to ``revision``.

        ``revision`` defaults to the current head. For tests and read-your-writes.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        self._triggers.wait(self._revision if revision is None else revision, timeout)

    def trigger_status(self) -> dict[str, dict[str, Any]]:
        """Per known trigger: cursor, lag, parked count, last error and filters.

        Keys: ``registered``, ``cursor``, ``lag`` (events behind the head), ``parked``,
        ``last_error``, ``delivered``, ``scope``, ``key``, ``enabled``.
        """
        return self._triggers.status(self._revision)

    def parked_events(self, name: str) -> builtins.list[dict[str, Any]]:
        """The dead letters of ``name``: ``revision``, ``event``, ``error``, ``attempts``."""
        return self._triggers.parked(name)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run ``name``'s handler again on its parked events (all, or one); returns successes."""
        return self._triggers.replay_parked(name, revision)

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget ``name``'s parked events (all, or one); returns how many."""
        return self._triggers.drop_parked(name, revision)

    @property
    def triggers_enabled(self) -> bool:
        """Whether triggers deliver; set it to pause or resume them all (live)."""
        return self._triggers.enabled

    @triggers_enabled.setter
    def triggers_enabled(self, enabled: bool) -> None:
        self._triggers.set_enabled(enabled)

    # ---- host interface for the runners -------------------------------------------------

    def _visible_revision(self) -> int:
        """The newest revision triggers may see.

        Acknowledged (and, under ``fsync: always``, durable), so a handler never sees a
        write that could still be lost.
        """
        return self._visible

    def _feed_append(self, records: builtins.list[EventRecord]) -> None:
        """Keep recent records for live delivery (write lock held)."""
        first, feed = self._feed_view
        feed.extend(records)
        if len(feed) > 2 * FEED_CAPACITY:  # amortized trim: keep the newer half
            self._feed_view = (first + FEED_CAPACITY, feed[FEED_CAPACITY:])

    def _iter_records(self, low: int, high: int) -> Iterator[EventRecord]:
        """Records ``low..high``: from the recent feed, else streamed from the timeline."""
        first, feed = self._feed_view  # no lock: see _feed_view
        if low >= first:
            return iter(feed[low - first : high - first + 1])
        return self._catch_up(low, high, first)

    def _catch_up(self, low: int, high: int, first: int) -> Iterator[EventRecord]:
        yield from self._timeline.scan(low, min(high, first - 1))
        if high >= first:
            yield from self._iter_records(max(low, first), high)

    def _oldest_revision(self) -> int:
        return self._timeline.oldest_revision()

    def _flush_log(self) -> None:
        if self._log is not None:
            self._log.flush()

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        raise NotImplementedError

    def _committed_cursors(self) -> dict[str, int]:
        return self._triggers.committed_cursors()

    def _trigger_pin(self) -> int | None:
        return self._triggers.min_registered_cursor()
