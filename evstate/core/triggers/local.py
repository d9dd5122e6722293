"""Cursors of the triggers of a store in this process (the memory and file stores).

Cursors and dead letters are kept in memory; a handler's writes commit through the store in
ONE log record together with the cursor move (:meth:`LocalCursors.advance`), so they happen
exactly once. The file store makes these durable (``triggers.cbor``,
:mod:`evstate.backends.file.cursors`); for a memory store they live as long as it does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evstate.core.triggers.cursors import KnownTrigger, check_resumable, start_cursor
from evstate.core.writes import Write
from evstate.errors import InvalidRequestError
from evstate.events import EventRecord

__all__ = ["CommitHost", "LocalCursors", "TriggerCursor"]


class CommitHost(Protocol):
    """The store's batch commit (:meth:`evstate.core.store.Store._commit_writes`)."""

    def _commit_writes(
        self,
        writes: Sequence[Write],
        cursor: tuple[str, int] | None = None,
        applied: Callable[[], None] | None = None,
    ) -> list[EventRecord]: ...

    def _visible_revision(self) -> int: ...


@dataclass(eq=False)
class TriggerCursor:
    """A known trigger's cursor and dead letters."""

    cursor: int
    parked: list[dict[str, Any]] = field(default_factory=list)


class LocalCursors:
    """The :class:`~evstate.core.triggers.cursors.CursorStore` of an in-process store.

    Lock order: the store's write lock, then this one (a snapshot reads the cursors under
    the write lock; :meth:`advance` moves a cursor inside the commit).
    """

    writable = True
    poll_interval = 0.1

    def __init__(self, host: CommitHost) -> None:
        self._host = host
        self._cursors: dict[str, TriggerCursor] = {}
        self._lock = threading.Lock()
        self.dirty = False

    def _require(self, name: str) -> TriggerCursor:
        found = self._cursors.get(name)
        if found is None:
            raise InvalidRequestError(f"no trigger named {name!r}")
        return found

    def _moved_by_hand(self, name: str) -> None:
        """Note that ``name``'s cursor was set or forgotten by hand (lock held)."""

    # ---- the CursorStore protocol ---------------------------------------------------------

    def register(self, name: str, start: str | int, oldest: int, head: int) -> None:
        """Create ``name``'s cursor per ``start``, or check the one it has."""
        with self._lock:
            found = self._cursors.get(name)
            if found is None:
                self._cursors[name] = TriggerCursor(start_cursor(name, start, oldest, head))
                self.dirty = True
            else:
                check_resumable(name, found.cursor, oldest)

    def unregister(self, name: str) -> None:
        """Nothing to let go of in this process; the cursor is kept."""
        self.dirty = True

    def claim(self, name: str) -> int | None:
        """The cursor (this process always owns its triggers)."""
        with self._lock:
            return self._require(name).cursor

    def pause(self, name: str) -> None:
        """Nothing to hand over: no other process delivers this store's triggers."""

    def position(self, name: str) -> int:
        """The cursor now (0 for an unknown name)."""
        found = self._cursors.get(name)
        return 0 if found is None else found.cursor

    def advance(
        self, name: str, revision: int, writes: list[Write], letter: dict[str, Any] | None
    ) -> None:
        """Move the cursor; the handler's writes commit in one record with the move."""

        def moved() -> None:
            with self._lock:
                entry = self._require(name)
                entry.cursor = revision
                if letter is not None:
                    entry.parked.append(letter)
                self.dirty = True

        if writes:
            self._host._commit_writes(writes, (name, revision), moved)
        else:
            moved()

    def flush(self, name: str) -> None:
        """Nothing to do: every advance took effect in memory."""

    def move(self, name: str, cursor: int) -> None:
        """Set the cursor by hand."""
        with self._lock:
            self._require(name).cursor = cursor
            self._moved_by_hand(name)
            self.dirty = True

    def forget(self, name: str) -> None:
        """Forget the cursor and dead letters."""
        with self._lock:
            if self._cursors.pop(name, None) is not None:
                self._moved_by_hand(name)
                self.dirty = True

    def known(self) -> dict[str, KnownTrigger]:
        """Every known trigger."""
        with self._lock:
            return {
                name: KnownTrigger(c.cursor, len(c.parked), None)
                for name, c in self._cursors.items()
            }

    def parked(self, name: str) -> list[dict[str, Any]]:
        """Copies of the dead letters of ``name``."""
        with self._lock:
            return [dict(p) for p in self._require(name).parked]

    def drop_parked(self, name: str, revision: int | None) -> int:
        """Forget dead letters (all, or one revision); returns how many."""
        with self._lock:
            entry = self._require(name)
            before = len(entry.parked)
            entry.parked = [
                p for p in entry.parked if revision is not None and p["revision"] != revision
            ]
            self.dirty = True
            return before - len(entry.parked)

    def unpark(self, name: str, letter: dict[str, Any], writes: list[Write]) -> bool:
        """Take the letter off the list and commit its handler's writes."""
        with self._lock:
            entry = self._require(name)
            kept = [p for p in entry.parked if p["revision"] != letter["revision"]]
            if len(kept) == len(entry.parked):
                return False  # replayed by another thread meanwhile
            taken = [p for p in entry.parked if p["revision"] == letter["revision"]]
            entry.parked = kept
            cursor = entry.cursor
            self.dirty = True
        if writes:
            try:
                self._host._commit_writes(writes, (name, cursor))
            except BaseException:
                with self._lock:  # not done: it stays parked
                    self._require(name).parked.extend(taken)
                raise
        return True

    def update_parked(self, name: str, letter: dict[str, Any]) -> None:
        """Store the new error and attempt count of a letter that failed again."""
        with self._lock:
            entry = self._require(name)
            entry.parked = [
                dict(letter) if p["revision"] == letter["revision"] else p for p in entry.parked
            ]
            self.dirty = True

    def pin(self, registered: Collection[str]) -> int | None:
        """The lowest cursor of a registered trigger."""
        with self._lock:
            cursors = [self._cursors[n].cursor for n in registered if n in self._cursors]
        return min(cursors) if cursors else None

    def close(self) -> None:
        """Nothing to make durable in memory."""

    # ---- for snapshots ----------------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Every known trigger's cursor (carried in snapshots)."""
        with self._lock:
            return {name: c.cursor for name, c in self._cursors.items()}
