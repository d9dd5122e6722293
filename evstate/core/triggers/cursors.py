"""Where a store keeps its triggers' cursors and dead letters: the :class:`CursorStore`.

The trigger runner (:mod:`evstate.core.triggers.manager`) is written once over this
protocol; each store kind implements it where its state lives:

- the file store: ``triggers.cbor`` in the store directory, plus cursors carried in log
  records and snapshots (a handler's writes commit in one log record with its cursor);
- a follower: a checksummed cursor file per trigger, ``flock``-ed while it runs;
- the redis store: a hash per trigger, delivery fenced by a lease with a TTL, so a fleet of
  processes delivers each event from one of them.

A cursor is the revision of the last event the trigger has finished (0: none yet).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple, Protocol

from evstate.core.writes import Write
from evstate.errors import HistoryCompactedError, InvalidRequestError

__all__ = ["CursorStore", "Deleted", "Fenced", "KnownTrigger", "check_resumable", "start_cursor"]


class Fenced(Exception):
    """The process may no longer deliver the trigger (its lease went): claim it again.

    Nothing of the advance that raised it was written.
    """


class Deleted(Exception):
    """The trigger was deleted (by another process): its runner stops."""


class KnownTrigger(NamedTuple):
    """A trigger as its cursor store knows it, registered here or not."""

    cursor: int
    parked: int
    last_error: str | None


def start_cursor(name: str, start: object, oldest: int, head: int) -> int:
    """The cursor a new trigger starts from: ``"latest"``, ``"earliest"`` or a revision.

    Raises:
        InvalidRequestError: ``start`` is none of those.
        HistoryCompactedError: ``start`` is a revision before the retained history.
    """
    if start == "latest":
        return head
    if start == "earliest":
        return oldest - 1
    if type(start) is int and start >= 1:
        if start < oldest:
            raise HistoryCompactedError(
                f"trigger {name!r}: revision {start} is before the retention horizon "
                f"(revision {oldest})",
                horizon=oldest,
            )
        return start - 1
    raise InvalidRequestError(
        f"start must be 'latest', 'earliest' or a revision >= 1, got {start!r}"
    )


def check_resumable(name: str, cursor: int, oldest: int) -> None:
    """Raise HistoryCompactedError if a known trigger's cursor is behind the history."""
    if cursor < oldest - 1:
        raise HistoryCompactedError(
            f"trigger {name!r} stopped at revision {cursor}, but history before revision "
            f"{oldest} was compacted: replay_trigger() from a retained revision, or "
            "delete_trigger() and register it again",
            horizon=oldest,
        )


class CursorStore(Protocol):
    """Cursors and dead letters of one store's triggers (see the module doc).

    The runner calls :meth:`claim` before each batch, :meth:`advance` after each event it
    finished, and :meth:`flush` after each batch. Methods may raise
    :class:`~evstate.errors.StorageError` (the runner retries) and :class:`Fenced`.
    """

    writable: bool
    """Whether handlers may write through ``event.store`` (a follower's may not)."""

    poll_interval: float
    """How often ``wait_for_triggers`` re-reads cursors that other processes move."""

    def register(self, name: str, start: str | int, oldest: int, head: int) -> None:
        """Make ``name`` known (a new name starts per ``start``) and hold it for this process.

        Raises:
            HistoryCompactedError: the name's cursor (or ``start``) is before ``oldest``.
            StoreLockedError: another process runs it and only one may (a follower's).
        """

    def unregister(self, name: str) -> None:
        """Let go of ``name`` (locks, leases) and make its cursor durable."""

    def claim(self, name: str) -> int | None:
        """The cursor to deliver after, or None while another process delivers ``name``.

        Raises:
            Deleted: the trigger no longer exists (another process deleted it).
        """

    def pause(self, name: str) -> None:
        """Delivery is paused here (``triggers_enabled = False``): let others deliver."""

    def position(self, name: str) -> int:
        """The cursor as it stands now (for ``wait_for_triggers``)."""

    def advance(
        self, name: str, revision: int, writes: list[Write], letter: dict[str, Any] | None
    ) -> None:
        """Record that the event at ``revision`` is done.

        The handler's ``writes`` commit with the cursor move (atomically), or ``letter``
        (a dead letter) is parked with it.

        Raises:
            Fenced: the trigger is no longer this process's; nothing was recorded.
        """

    def flush(self, name: str) -> None:
        """Make advances that were only noted (no writes, no letter) take effect."""

    def move(self, name: str, cursor: int) -> None:
        """Set ``name``'s cursor by hand (``replay_trigger``).

        Raises:
            InvalidRequestError: no trigger of that name.
        """

    def forget(self, name: str) -> None:
        """Forget ``name``: cursor and dead letters (``delete_trigger``)."""

    def known(self) -> dict[str, KnownTrigger]:
        """Every trigger with a cursor, registered here or not."""

    def parked(self, name: str) -> list[dict[str, Any]]:
        """``name``'s dead letters, oldest first (InvalidRequestError if unknown)."""

    def drop_parked(self, name: str, revision: int | None) -> int:
        """Forget dead letters (all, or one revision); returns how many."""

    def unpark(self, name: str, letter: dict[str, Any], writes: list[Write]) -> bool:
        """Remove a replayed letter and commit its handler's writes, at once.

        False if it was already gone (replayed elsewhere: nothing is written).
        """

    def update_parked(self, name: str, letter: dict[str, Any]) -> None:
        """Store a letter whose replay failed again (new ``error`` and ``attempts``)."""

    def pin(self, registered: Collection[str]) -> int | None:
        """The lowest cursor retention must keep history for, or None."""

    def close(self) -> None:
        """Stop background work and make every cursor durable."""
