"""The memory store (``store_method: in_memory``): the core store with no disk."""

from __future__ import annotations

from typing import Any

from evstate.backends.file.restore import DIRECTORY_RESTORE
from evstate.backends.memory.timeline import MemoryTimeline
from evstate.config import Config
from evstate.core.lifecycle import Clock
from evstate.core.store import Store, register_store_kind
from evstate.core.table import StateTable
from evstate.core.triggers.local import LocalCursors

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A :class:`~evstate.Store` whose events and state live in this process only.

    Same API and rules as the file store; ``snapshot()`` has nothing to write,
    ``restore_to()`` writes a file store directory, and nothing survives :meth:`close`.
    """

    def __init__(self, config: Config, *, io: object = None, clock: Clock | None = None) -> None:
        """Open an empty memory store (use :func:`evstate.open`); ``io`` is not used.

        ``clock`` replaces the wall clock (ms since the epoch; see ``Store.expire``).
        """
        self._timeline = MemoryTimeline()
        self._start(
            config,
            table=StateTable(),
            revision=0,
            timestamp=0,
            source=self._timeline,
            journal=None,
            cursors=LocalCursors(self),
            clock=clock,
        )

    _restore_writer = DIRECTORY_RESTORE

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: fold older history into the base state."""
        self._check_open()
        with self._snapshot_lock:
            result = self._timeline.compact(self._retention_cutoff(), self._revision)
        result["horizon_revision"] = self._timeline.horizon()
        return result


register_store_kind("in_memory", MemoryStore)
