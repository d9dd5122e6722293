"""The state reads of stores that hold their state in memory (owner stores, followers).

``get``, ``list``, ``list_values``, ``list_keys``, ``list_entries`` and ``list_groups`` over
a :class:`~evstate.core.table.StateTable`. Reads take no lock: each is one dictionary lookup
or one consistent copy (:mod:`evstate.core.table`), then decoding outside any lock, so a
read never waits for a writer and every value returned is a fresh copy.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

from evstate.core.arguments import check_name, check_names
from evstate.core.lifecycle import Clock
from evstate.core.listing import ListingMethods, Listings, PinnedScope
from evstate.core.log_source import LogSource
from evstate.core.replay import live_items
from evstate.core.table import StateTable
from evstate.errors import InvalidCursorError, StoreClosedError
from evstate.values import DEADLINE_MARK, deadline_of, decode_value, expired

_MARK = bytes([DEADLINE_MARK])

__all__ = ["TableReads"]


class TableReads(ListingMethods):
    """The read methods over ``self._table`` (a mixin).

    A store sets ``_listings``, ``_table_lock`` (the lock its table changes under, so a
    listing's first page reads the revision and the scope together) and ``_clock``. A key
    past its deadline is absent for every read at once, whether or not its expiry event was
    written yet.
    """

    _table: StateTable
    _clock: Clock
    _closed: bool
    _source: LogSource
    _listings: Listings
    _table_lock: threading.Lock

    def _check_open(self) -> None:
        raise NotImplementedError

    def _audit_head(self) -> int:
        raise NotImplementedError

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        return self._table.get(scope, key)

    def get(self, scope: str, key: str) -> Any:
        """The value of ``scope/key`` (a fresh copy), or ``None`` if it does not exist."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        check_names(scope, key)
        raw = self._table.get(scope, key)
        if raw is None or (raw[:1] == _MARK and expired(raw, self._clock())):
            return None
        return decode_value(raw)

    def ttl(self, scope: str, key: str) -> int | None:
        """Milliseconds until ``scope/key`` expires; ``None`` if it has no TTL or no value."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        raw = self._table.get(scope, key)
        deadline = None if raw is None else deadline_of(raw)
        if deadline is None:
            return None
        remaining = deadline - self._clock()
        return remaining if remaining > 0 else None

    def _items(self, scope: str) -> dict[str, bytes]:
        """The live stored values of ``scope`` (keys past their deadline left out)."""
        items = self._table.items(scope)
        if self._table.expiry.entries:
            return live_items(items, self._clock())
        return items

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope``, in sorted key order (``{}`` if none)."""
        self._check_open()
        check_name("scope", scope)
        items = self._items(scope)
        return {key: decode_value(items[key]) for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in key insertion order (iii ``state::list``)."""
        self._check_open()
        check_name("scope", scope)
        return [decode_value(raw) for raw in self._items(scope).values()]

    def list_keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope``, sorted (``[]`` if none): iii's ``state::list_keys``."""
        self._check_open()
        check_name("scope", scope)
        return sorted(self._items(scope))

    def _listing_scope_now(self, scope: str) -> PinnedScope:
        with self._table_lock:
            revision, items = self._audit_head(), self._table.items(scope)
        now = self._clock()
        return PinnedScope(revision, live_items(items, now), as_of_ms=now)

    def _listing_scope_at(self, scope: str, revision: int, as_of_ms: int) -> PinnedScope:
        if revision > self._audit_head():
            raise InvalidCursorError("INVALID_CURSOR: the cursor names a revision not reached")
        scopes, _ = self._source.state_at(revision)
        return PinnedScope(revision, live_items(scopes.get(scope, {}), as_of_ms), as_of_ms=as_of_ms)

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}``: sorted scopes holding at least one live key."""
        self._check_open()
        groups = self._table.scopes()
        if self._table.expiry.entries:
            now = self._clock()
            for scope in self._table.expiry.due_scopes(now) & set(groups):
                if not live_items(self._table.items(scope), now):
                    groups.remove(scope)
        return {"groups": groups}
