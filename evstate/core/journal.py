"""What the core store writes to and reads back from: the :class:`Journal` and its history.

The file backend provides both (its segment log is the journal; its timeline the history);
the memory store has no journal and keeps its history in memory.
"""

from __future__ import annotations

from typing import Protocol

from evstate.core.log_source import LogSource
from evstate.events import EventRecord

__all__ = ["History", "Journal"]


class Journal(Protocol):
    """Where committed events go (the file store's segment log)."""

    @property
    def durable_revision(self) -> int:
        """The highest revision on stable storage."""

    def append(self, payload: bytes, revision: int, last: int | None = None) -> tuple[int, int]:
        """Write one record (revisions ``revision..last``); returns its position.

        Raises StorageError (nothing appended) or StoreFailedError (an fsync failed before).
        """

    def check_writable(self) -> None:
        """Raise StoreFailedError if the journal failed closed."""

    def wait_durable(self, revision: int) -> None:
        """Return once ``revision`` is on stable storage (group commit)."""

    def flush(self) -> None:
        """Make everything appended durable now."""

    def close(self) -> None:
        """Flush and close."""


class History(LogSource, Protocol):
    """The log source of a store that also indexes every event it commits."""

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Note a committed record and where it is (write lock held)."""
