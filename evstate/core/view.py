"""Read-only views of the state as of a past revision (``Store.at``)."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from evstate.core.replay import Scopes
from evstate.errors import InvalidRequestError
from evstate.events import Event
from evstate.values import decode_value

__all__ = ["StateView"]


def _check(what: str, name: object) -> None:
    if type(name) is not str:
        raise InvalidRequestError(f"{what} must be a str, got {type(name).__name__}")


class StateView:
    """The state exactly as of ``revision`` (read-only, immutable, thread-safe).

    ``timestamp`` is the time of the event at ``revision`` (None for revision 0).
    """

    def __init__(
        self,
        revision: int,
        timestamp: int | None,
        scopes: Scopes,
        history: Callable[..., builtins.list[Event]],
    ) -> None:
        self.revision = revision
        self.timestamp = timestamp
        self._scopes = scopes
        self._history = history

    def get(self, scope: str, key: str) -> Any:
        """The value as of this revision, or ``None``."""
        _check("scope", scope)
        _check("key", key)
        raw = self._scopes.get(scope, {}).get(key)
        return None if raw is None else decode_value(raw)

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope`` as of this revision, sorted by key."""
        _check("scope", scope)
        items = self._scopes.get(scope, {})
        return {key: decode_value(items[key]) for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in key insertion order."""
        _check("scope", scope)
        return [decode_value(raw) for raw in self._scopes.get(scope, {}).values()]

    def list_keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope`` as of this revision, sorted (as ``Store.list_keys``)."""
        _check("scope", scope)
        return sorted(self._scopes.get(scope, {}))

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}`` as of this revision."""
        return {"groups": sorted(s for s, keys in self._scopes.items() if keys)}

    def history(
        self, scope: str, key: str, *, since: Any = None, limit: int | None = None
    ) -> builtins.list[Event]:
        """The key's events up to this revision (see ``Store.history``)."""
        return self._history(scope, key, since=since, until=self.revision, limit=limit)

    def __repr__(self) -> str:
        return f"<evstate.StateView revision={self.revision}>"
