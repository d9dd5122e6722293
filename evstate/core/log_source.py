"""The read side of a store's log: what audit, point-in-time reads and triggers need.

Every store kind implements :class:`LogSource` once: the file timeline (for the owner of a
directory and for its read-only followers alike), the memory timeline, and the redis
timeline (which turns stream entries into :class:`~evstate.events.EventRecord` at its edge).
The audit API (:mod:`evstate.core.audit`) and the trigger runners are written over it, so
every store answers ``history``, ``events``, ``at``, ``verify`` and delivers triggers by the
same rules.

Revisions: ``oldest_revision()`` is the oldest event still retained; ``horizon()`` the
oldest revision whose whole state can be rebuilt (0 while the log reaches back to the empty
store, else the base snapshot's revision, which is ``oldest_revision() - 1`` or newer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from evstate.core.replay import Scopes
from evstate.events import EventRecord

__all__ = ["LogSource", "Progress"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: units of long work done so far (bytes for file stores)."""


class LogSource(Protocol):
    """What the core reads from a store's retained history (see the module doc).

    Every method is thread-safe and may run while writers append. A method that finds
    history compacted under it (files or entries deleted while it reads) raises
    :class:`~evstate.errors.HistoryCompactedError`, never answers from less than it should.
    """

    def oldest_revision(self) -> int:
        """The oldest revision whose event is retained (the head + 1 when none is)."""

    def horizon(self) -> int:
        """The oldest revision whose state :meth:`state_at` can rebuild."""

    def horizon_timestamp(self) -> int | None:
        """The time (ms) of the event at :meth:`horizon`; None when the horizon is 0."""

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before time ``ms`` (at most ``head``)."""

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest retained revision at or after time ``ms`` (``head + 1`` if none)."""

    def scan(self, low: int, high: int, progress: Progress | None = None) -> Iterator[EventRecord]:
        """The records with revisions in ``[low, high]``, oldest first, streamed."""

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """The records of one key with revisions in ``[low, high]``, oldest first."""

    def state_at(
        self, revision: int, progress: Progress | None = None
    ) -> tuple[Scopes, int | None]:
        """The state as of ``revision`` and the time of its event (None for revision 0).

        Raises:
            HistoryCompactedError: ``revision`` is before :meth:`horizon`.
        """

    def verify(self, head: int, live: Scopes, progress: Progress | None = None) -> list[str]:
        """Check the retained history up to ``head`` against ``live``; returns problems."""

    def stats(self) -> dict[str, Any]:
        """Sizes and the retained range (``oldest_revision``, ``horizon_revision``, ...)."""
