"""The deadlines of keys with a time-to-live, in time order (docs/api.md, "Time-to-live").

A key's deadline lives in its stored value (:func:`~evstate.values.with_deadline`), so the
log, snapshots, replay and followers all carry it. This index only answers "which keys may
be due by now", for the expirer and for the reads that must hide a due key at once:

- keys are filed in 100 ms buckets of a sorted map (sortedcontainers), per scope, as
  references to the key strings the table holds: about 10 bytes per key, no tuple each;
- an entry is never removed when its key changes: the expirer checks the key's current
  stored value before expiring it, and drops entries that no longer apply when their bucket
  comes due. Keys re-set with new deadlines leave one stale entry each until then.

Thread-safe: changes come from the store's writer, reads from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sortedcontainers import SortedDict

__all__ = ["BUCKET_MS", "ExpiryIndex"]

BUCKET_MS = 100


class ExpiryIndex:
    """Keys by deadline bucket (see the module doc)."""

    __slots__ = ("_buckets", "_lock", "entries")

    def __init__(self) -> None:
        self._buckets: SortedDict = SortedDict()  # bucket -> {scope: [key, ...]}
        self._lock = threading.Lock()
        self.entries = 0  # entries filed, stale ones included (0: no key ever had a TTL)

    def add(self, scope: str, key: str, deadline_ms: int) -> None:
        """File ``scope/key`` under its deadline."""
        bucket = deadline_ms // BUCKET_MS
        with self._lock:
            scopes = self._buckets.get(bucket)
            if scopes is None:
                self._buckets[bucket] = {scope: [key]}
            else:
                keys = scopes.get(scope)
                if keys is None:
                    scopes[scope] = [key]
                else:
                    keys.append(key)
            self.entries += 1

    def take_due(
        self, now_ms: int, limit: int, is_due: Callable[[str, str], bool]
    ) -> list[tuple[str, str]]:
        """Remove and return up to ``limit`` entries that may be due by ``now_ms``.

        Every entry of a bucket that has wholly passed is taken; of the bucket ``now_ms``
        falls in, only those ``is_due(scope, key)`` confirms. The caller checks each key's
        current deadline again (an entry may be stale) under its write lock.
        """
        current = now_ms // BUCKET_MS
        taken: list[tuple[str, str]] = []
        with self._lock:
            for bucket in list(self._buckets.irange(maximum=current)):
                if len(taken) >= limit:
                    break
                scopes = self._buckets[bucket]
                for scope in list(scopes):
                    keys = scopes[scope]
                    room = limit - len(taken)
                    if bucket == current:
                        due = [key for key in keys if is_due(scope, key)][:room]
                        if not due:
                            continue
                        chosen = set(due)
                        scopes[scope] = [key for key in keys if key not in chosen]
                    else:
                        due = keys[:room]
                        del keys[:room]
                    taken.extend((scope, key) for key in due)
                    if not scopes[scope]:
                        del scopes[scope]
                    if len(taken) >= limit:
                        break
                if not scopes:
                    del self._buckets[bucket]
            self.entries -= len(taken)
        return taken

    def due_scopes(self, now_ms: int) -> set[str]:
        """Scopes that may hold a key due by ``now_ms`` (from every bucket not after it)."""
        with self._lock:
            found: set[str] = set()
            for bucket in self._buckets.irange(maximum=now_ms // BUCKET_MS):
                found.update(self._buckets[bucket])
            return found

    def next_due_ms(self) -> int | None:
        """When the oldest bucket has wholly passed (None: nothing filed)."""
        with self._lock:
            if not self._buckets:
                return None
            return int(self._buckets.peekitem(0)[0] + 1) * BUCKET_MS

    def clear(self) -> None:
        """Forget every entry (the table was replaced)."""
        with self._lock:
            self._buckets.clear()
            self.entries = 0
