"""The state reads of stores that hold their state in memory (owner stores, followers).

``get``, ``list``, ``list_values`` and ``list_groups`` over a
:class:`~evstate.core.table.StateTable`. Reads take no lock: each is one dictionary lookup
or one C-level copy (atomic under the GIL), then decoding outside any lock, so a read never
waits for a writer and every value returned is a fresh copy.
"""

from __future__ import annotations

import builtins
from typing import Any

from evstate.core.arguments import check_name
from evstate.core.table import StateTable
from evstate.errors import StoreClosedError
from evstate.values import decode_value

__all__ = ["TableReads"]


class TableReads:
    """The read methods over ``self._table`` (a mixin)."""

    _table: StateTable
    _closed: bool

    def _check_open(self) -> None:
        raise NotImplementedError

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        return self._table.get(scope, key)

    def get(self, scope: str, key: str) -> Any:
        """The value of ``scope/key`` (a fresh copy), or ``None`` if it does not exist."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        if (
            type(scope) is not str
            or type(key) is not str
            or not (scope.isascii() and key.isascii())
        ):
            check_name("scope", scope)
            check_name("key", key)
        raw = self._table.get(scope, key)
        return None if raw is None else decode_value(raw)

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope``, in sorted key order (``{}`` if none)."""
        self._check_open()
        check_name("scope", scope)
        items = self._table.items(scope)
        return {key: decode_value(items[key]) for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in key insertion order (iii ``state::list``)."""
        self._check_open()
        check_name("scope", scope)
        return [decode_value(raw) for raw in self._table.items(scope).values()]

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}``: sorted scopes holding at least one key."""
        self._check_open()
        return {"groups": self._table.scopes()}
