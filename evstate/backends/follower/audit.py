"""The audit half of :class:`~evstate.backends.follower.follower.Follower`: history, past states, checks.

``history``, ``events``, ``at``, ``restore_to``, ``stats``, ``verify`` and the owner's
trigger status, answered from the owner's retained files with the store's contracts
(docs/api.md). A mixin that only the follower uses; it relies on the attributes the
follower sets up (declared below for the type checker), as the store's history half does.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evstate.errors import HistoryCompactedError, InvalidRequestError
from evstate.events import Event
from evstate.backends.follower.files import Progress, owner_pid, read_owner_triggers
from evstate.backends.follower.live import LiveLog
from evstate.backends.file.snapshot import check_restore_target, write_restored_store
from evstate.core.view import StateView

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

__all__ = ["AuditMethods", "check_name", "time_ms"]


def check_name(what: str, name: object) -> None:
    """Raise InvalidRequestError unless ``name`` is a ``str``."""
    if type(name) is not str:
        raise InvalidRequestError(
            f"{what} must be a str, got {type(name).__name__}: {name!r}"[:200]
        )


def time_ms(when: datetime | float) -> int:
    """A datetime, or seconds since the epoch, in ms since the epoch."""
    if isinstance(when, datetime):
        return int(when.timestamp() * 1000)
    if isinstance(when, int | float) and not isinstance(when, bool):
        return int(when * 1000)
    raise InvalidRequestError(f"a time must be a datetime or seconds since the epoch, got {when!r}")


class AuditMethods:
    """History, point-in-time, checks and statistics of a follower."""

    _live: LiveLog
    _path: str
    _observer: BaseObserver | None

    def _check_open(self) -> None:
        raise NotImplementedError

    def _bound(self, bound: int | datetime | None, *, low: bool) -> int | None:
        if bound is None:
            return None
        if isinstance(bound, int) and not isinstance(bound, bool):
            return bound
        ms = time_ms(bound)
        history = self._live.history
        return history.first_revision_from_time(ms) if low else history.revision_at_time(ms)

    def history(
        self,
        scope: str,
        key: str,
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        """The events of ``scope/key``, oldest first (``Store.history``'s contract).

        Raises:
            HistoryCompactedError: ``since`` is before the oldest retained event.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        history = self._live.history
        oldest = history.oldest_revision()
        low = self._bound(since, low=True)
        if low is not None and low < oldest and (since != 0 or oldest > 1):
            raise HistoryCompactedError(
                f"revision {low} is before the retained history (revision {oldest})",
                horizon=oldest,
            )
        high = self._bound(until, low=False)
        head = self._live.revision
        records = history.key_records(
            scope, key, max(low or 0, oldest), head if high is None else min(high, head)
        )
        if limit is not None:
            records = records[: max(limit, 0)]
        return [record.to_event() for record in records]

    def events(
        self,
        start: int | datetime | None = None,
        end: int | datetime | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        progress: Progress | None = None,
    ) -> Iterator[Event]:
        """Iterate over the retained log, oldest first, up to :attr:`revision` at the call.

        Bounds and filters as ``Store.events``. Raises HistoryCompactedError if ``start`` is
        before the oldest retained event.
        """
        self._check_open()
        history = self._live.history
        oldest = history.oldest_revision()
        low = self._bound(start, low=True)
        if low is not None and 0 < low < oldest and oldest > 1:
            raise HistoryCompactedError(
                f"revision {low} is before the retained history (revision {oldest})",
                horizon=oldest,
            )
        high = self._bound(end, low=False)
        head = self._live.revision if high is None else min(high, self._live.revision)
        records = history.scan(max(low or 0, oldest), head, progress)
        return (
            r.to_event()
            for r in records
            if (scope is None or r.scope == scope) and (key is None or r.key == key)
        )

    def _target(self, revision: int | None, when: datetime | float | None) -> int:
        if revision is not None and when is not None:
            raise InvalidRequestError("give a revision or a time, not both")
        head = self._live.revision
        if when is not None:
            return self._live.history.revision_at_time(time_ms(when))
        if revision is None:
            return head
        if type(revision) is not int or revision < 0:
            raise InvalidRequestError(f"revision must be an int >= 0, got {revision!r}")
        return min(revision, head)

    def at(
        self,
        revision: int | None = None,
        time: datetime | float | None = None,
        *,
        progress: Progress | None = None,
    ) -> StateView:
        """A read-only view of the state exactly as of ``revision`` or ``time``.

        As ``Store.at``: a time after the newest event, or a revision past :attr:`revision`,
        answers the current state.

        Raises:
            HistoryCompactedError: before the owner's retention horizon.
        """
        self._check_open()
        target = self._target(revision, time)
        scopes, stamp = self._live.history.state_at(target, progress)
        return StateView(target, stamp, scopes, self.history)

    def restore_to(
        self,
        path: str | os.PathLike[str],
        revision: int | None = None,
        time: datetime | float | None = None,
        *,
        progress: Progress | None = None,
    ) -> str:
        """Write a new, independent store directory holding the state at that point.

        As ``Store.restore_to`` (a snapshot at that revision; the new store continues the
        numbering), but without the owner's lock: it works while the owner runs.

        Raises:
            HistoryCompactedError: before the retention horizon.
            StorageError: ``path`` exists and is not an empty directory.
        """
        self._check_open()
        target = check_restore_target(path)
        at = self._target(revision, time)
        scopes, stamp = self._live.history.state_at(at, progress)
        return write_restored_store(target, at, stamp or 0, scopes)

    def stats(self) -> dict[str, Any]:
        """``Store.stats``'s numbers as seen from here, plus ``owner_pid`` and ``problem``."""
        self._check_open()
        table = self._live.table
        result: dict[str, Any] = {
            "revision": self._live.revision,
            "keys": table.key_count(),
            "scopes": len(table.scopes()),
        }
        result.update(self._live.history.stats())
        result["owner_pid"] = owner_pid(self._path)
        result["watching"] = self._observer is not None
        result["problem"] = self._live.problem
        return result

    def verify(self, *, progress: Progress | None = None) -> builtins.list[str]:
        """Check the owner's files read-only; returns the problems (empty when healthy).

        ``Store.verify``'s checks (every record checksum, revision continuity, every
        snapshot, newest snapshot + replay == full replay == this follower's state), up to
        :attr:`revision`; safe while the owner writes. A torn tail at the end of the newest
        segment is not a problem (the owner is writing it, or cuts it off at its next open).
        """
        self._check_open()
        problems = [self._live.problem] if self._live.problem else []
        with self._live.lock:
            head = self._live.revision
            live = self._live.table.scope_map()
        return problems + self._live.history.verify(head, live, progress)

    def owner_triggers(self) -> dict[str, dict[str, Any]]:
        """The owner's triggers as its files show them: ``cursor``, ``lag``, ``parked``.

        ``cursor`` is the highest of ``triggers.cbor``, the snapshot and the batch records
        read (as the owner computes it at open); whether a trigger is registered in the
        owner right now is not visible from here.
        """
        self._check_open()
        saved = read_owner_triggers(self._path)
        head = self._live.revision
        names = sorted(set(saved) | set(self._live.owner_cursors))
        result = {}
        for name in names:
            entry = saved.get(name, {})
            cursor = max(int(entry.get("cursor", 0)), self._live.owner_cursors.get(name, 0))
            result[name] = {
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": len(entry.get("parked", [])),
            }
        return result

    def owner_parked(self, name: str) -> builtins.list[dict[str, Any]]:
        """The owner's parked events of trigger ``name`` (from its ``triggers.cbor``)."""
        self._check_open()
        return list(read_owner_triggers(self._path).get(name, {}).get("parked", []))
