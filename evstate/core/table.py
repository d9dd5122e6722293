"""The in-memory state: ``scope -> key -> encoded value``.

Values are kept as their encoded CBOR bytes (the same bytes the log holds): compact in
memory, and every read decodes a fresh object, so callers can never mutate stored state.
Within a scope, keys keep insertion order (an overwrite keeps its place), as the iii
``kv`` adapter does; a scope with no keys left is dropped.

Threading: mutations (:meth:`put`, :meth:`remove`, :meth:`apply`, :meth:`apply_all`) run
under the store's write lock. Reads take no lock: each read is a single dict operation or a
C-level copy, which is atomic under the GIL. A batch changes several keys, so the reads
that see more than one key (:meth:`items`, :meth:`scopes`, :meth:`key_count`) are guarded
by a sequence counter: :meth:`apply_all` makes it odd while it applies and even after, and
such a read retries until it ran entirely between two batches. No reader sees half a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from evstate.core.expiry import ExpiryIndex
from evstate.events import DELETED, EventRecord
from evstate.values import DEADLINE_MARK, deadline_of

__all__ = ["StateTable"]

_T = TypeVar("_T")
_MARK = bytes([DEADLINE_MARK])


class StateTable:
    """The current state, as encoded values."""

    __slots__ = ("_scopes", "_sequence", "expiry")

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, bytes]] = {}
        self._sequence = 0  # odd while a batch is being applied
        self.expiry = ExpiryIndex()  # the keys with a deadline (evstate.core.expiry)

    def load(self, scopes: dict[str, dict[str, bytes]]) -> None:
        """Replace the whole table with ``scopes`` (taken over, not copied; at open only)."""
        self._scopes = {scope: keys for scope, keys in scopes.items() if keys}
        self.expiry.clear()
        for scope, keys in self._scopes.items():
            for key, value in keys.items():
                if value[:1] == _MARK:
                    self.expiry.add(scope, key, deadline_of(value) or 0)

    def take(self, other: StateTable) -> None:
        """Hold what ``other`` holds, in one step (a follower's resync swaps its state)."""
        self._scopes = other._scopes
        self.expiry = other.expiry

    def get(self, scope: str, key: str) -> bytes | None:
        """Encoded value of ``scope/key``, or ``None`` if the key does not exist."""
        keys = self._scopes.get(scope)
        return None if keys is None else keys.get(key)

    def put(self, scope: str, key: str, value: bytes) -> None:
        """Store a stored value (creates the scope if needed); file its deadline, if any."""
        keys = self._scopes.get(scope)
        if keys is None:
            self._scopes[scope] = {key: value}
        else:
            keys[key] = value
        if value[:1] == _MARK:
            self.expiry.add(scope, key, int.from_bytes(value[1:9], "big"))

    def remove(self, scope: str, key: str) -> None:
        """Remove a key if present; drop the scope when it becomes empty."""
        keys = self._scopes.get(scope)
        if keys is not None and keys.pop(key, None) is not None and not keys:
            del self._scopes[scope]

    def apply(self, record: EventRecord) -> None:
        """Apply a logged event (replay)."""
        if record.type_code == DELETED:
            self.remove(record.scope, record.key)
        else:
            assert record.new is not None
            self.put(record.scope, record.key, record.new)

    def apply_all(self, records: Sequence[EventRecord]) -> None:
        """Apply the events of one atomic record: readers see all of them or none."""
        if len(records) == 1:
            self.apply(records[0])
            return
        self._sequence += 1
        try:
            for record in records:
                self.apply(record)
        finally:
            self._sequence += 1

    def _consistent(self, read: Callable[[], _T]) -> _T:
        """Run ``read`` until it ran while no batch was being applied."""
        while True:
            before = self._sequence
            if not before & 1:
                result = read()
                if self._sequence == before:
                    return result
            time.sleep(0)  # let the writer finish its batch

    def items(self, scope: str) -> dict[str, bytes]:
        """A copy of one scope's ``key -> encoded value`` map, in insertion order."""
        return self._consistent(lambda: self._copy(scope))

    def _copy(self, scope: str) -> dict[str, bytes]:
        keys = self._scopes.get(scope)
        return {} if keys is None else keys.copy()

    def scopes(self) -> list[str]:
        """Sorted names of the scopes holding at least one key."""
        return sorted(self._consistent(self._scopes.copy))

    def key_count(self) -> int:
        """Number of keys across all scopes."""
        return sum(len(keys) for keys in self._consistent(self._scopes.copy).values())

    def scope_map(self) -> dict[str, dict[str, bytes]]:
        """A copy of the whole table (for comparisons and snapshots)."""
        return {scope: keys.copy() for scope, keys in self._scopes.copy().items()}
