"""History of a memory store: the retained records in a list, plus the base state.

The memory store's :class:`~evstate.core.log_source.LogSource`. Retention folds the oldest
records into the base state (:meth:`MemoryTimeline.compact`), so ``at()`` answers from the
base revision (the horizon) on.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import Any

from evstate.core.audit import compacted
from evstate.core.log_source import Progress
from evstate.core.replay import Scopes, apply_record, compare_replays, copy_scopes, replay
from evstate.events import EventRecord

__all__ = ["MemoryTimeline"]


class MemoryTimeline:
    """The retained records of a memory store, and the state before them."""

    def __init__(self) -> None:
        self._records: list[EventRecord] = []
        self._timestamps: list[int] = []
        self._base_revision = 0
        self._base_timestamp: int | None = None
        self._base: Scopes = {}
        self._keys: dict[str, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    def recorded(self, record: EventRecord, segment: int, offset: int) -> None:
        """Keep a committed record (caller holds the write lock)."""
        with self._lock:
            self._records.append(record)
            self._timestamps.append(record.timestamp)
            keys = self._keys.get(record.scope)
            if keys is None:
                self._keys[record.scope] = {record.key: [record.revision]}
            else:
                keys.setdefault(record.key, []).append(record.revision)

    def horizon(self) -> int:
        """The oldest revision whose state can be rebuilt (the base)."""
        return self._base_revision

    def horizon_timestamp(self) -> int | None:
        """Time (ms) of the event at the horizon; None when the horizon is revision 0."""
        return self._base_timestamp

    def oldest_revision(self) -> int:
        """The oldest revision still held."""
        return self._base_revision + 1

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before ``ms``."""
        with self._lock:
            found = self._base_revision + bisect.bisect_right(self._timestamps, ms)
        return min(found, head)

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest revision at or after ``ms``."""
        with self._lock:
            return self._base_revision + 1 + bisect.bisect_left(self._timestamps, ms)

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of one key within ``[low, high]``."""
        with self._lock:
            revs = self._keys.get(scope, {}).get(key, [])
            picked = revs[bisect.bisect_left(revs, low) : bisect.bisect_right(revs, high)]
            return [self._records[r - self._base_revision - 1] for r in picked]

    def scan(self, low: int, high: int, progress: Progress | None = None) -> Iterator[EventRecord]:
        """Records within ``[low, high]``."""
        with self._lock:
            start = max(low - self._base_revision - 1, 0)
            stop = max(high - self._base_revision, 0)
            records = self._records[start:stop]
        yield from records

    def state_at(
        self, revision: int, progress: Progress | None = None
    ) -> tuple[Scopes, int | None]:
        """The state as of ``revision`` (base state plus replay) and the time of its event."""
        with self._lock:
            if revision < self._base_revision:
                raise compacted(revision, self._base_revision)
            scopes = copy_scopes(self._base)
            records = self._records[: revision - self._base_revision]
            stamp = self._base_timestamp
        last = replay(scopes, records)
        if last is not None:
            stamp = last
        return scopes, (stamp if revision else None)

    def compact(self, cutoff: int, head: int) -> dict[str, Any]:
        """Fold the records at or below ``cutoff`` into the base state."""
        with self._lock:
            drop = max(0, min(cutoff, head) - self._base_revision)
            if not drop:
                return {"base": self._base_revision, "events_dropped": 0}
            for record in self._records[:drop]:
                apply_record(self._base, record)
            self._base_timestamp = self._records[drop - 1].timestamp
            self._records = self._records[drop:]
            self._timestamps = self._timestamps[drop:]
            self._base_revision += drop
            low = self._base_revision + 1
            for scope in list(self._keys):
                keys = self._keys[scope]
                for key in list(keys):
                    revs = keys[key][bisect.bisect_left(keys[key], low) :]
                    if revs:
                        keys[key] = revs
                    else:
                        del keys[key]
                if not keys:
                    del self._keys[scope]
            return {"base": self._base_revision, "events_dropped": drop}

    def verify(self, head: int, live: Scopes, progress: Progress | None = None) -> list[str]:
        """Check continuity and that base + replay equals the live state."""
        with self._lock:
            base, revisions = self._base_revision, [r.revision for r in self._records]
            start = (base, copy_scopes(self._base))
        if revisions != list(range(base + 1, base + 1 + len(revisions))):
            return ["event revisions are not continuous"]
        return compare_replays([start], head, live, self.scan)

    def stats(self) -> dict[str, Any]:
        """Counts of what is held."""
        with self._lock:
            oldest = self._records[0].timestamp if self._records else None
            count = len(self._records)
        return {
            "segments": 0,
            "log_bytes": 0,
            "snapshots": 0,
            "snapshot_bytes": 0,
            "last_snapshot_revision": None,
            "events_in_memory": count,
            "oldest_revision": self._base_revision + 1,
            "oldest_timestamp": oldest,
            "horizon_revision": self._base_revision,
            "index_built": True,
        }
