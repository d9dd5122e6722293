"""The changes a person can make from the console, each one store call.

Only when the server was started with console writes allowed (``evstate serve
--console-writes``); otherwise every action is refused with ``console_read_only`` and
nothing is called. The actions arrive over the console's WebSocket (websockets reads only
body-less HTTP requests, so a form cannot post them) and run on a console thread:

- ``save {scope, key, value, expected?, create?, ttl_ms?}``: ``value`` and ``expected``
  are JSON text. ``create`` writes only if the key is absent (``compare_and_set`` with
  ``expected`` None); otherwise the write happens only if the key still holds ``expected``,
  the value the editor was opened with, so an edit never silently overwrites a change made
  meanwhile (``compare_and_set``; a key that held JSON null is written with ``set``, as
  compare-and-set cannot tell null from absent). ``ttl_ms`` gives the key a time-to-live;
  without it the write clears any TTL, as every ``set`` does.
- ``delete {scope, key}``: ``store.delete``.
- ``replay_parked {name, revision?}`` / ``drop_parked {name, revision?}``: run a trigger's
  parked events again, or forget them (all, or the one at ``revision``).

Writes go through the server's :class:`~evstate.server.metrics.CountingStore`, so they
count in ``/metrics`` like any other client's.
"""

from __future__ import annotations

import json
from typing import Any

from evstate.core.store import Store
from evstate.server.metrics import CountingStore

__all__ = ["ACTIONS", "ActionRefused", "ConsoleActions"]

ACTIONS = ("save", "delete", "replay_parked", "drop_parked")


class ActionRefused(Exception):
    """An action not carried out; ``code`` and ``message`` go back to the page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(message: dict[str, Any], field: str) -> Any:
    text = message.get(field)
    if not isinstance(text, str):
        raise ActionRefused("invalid_action", f"{field} must be JSON text")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ActionRefused("invalid_json", f"{field} is not valid JSON: {exc}") from None


def _text(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise ActionRefused("invalid_action", f"{field} must be a string")
    return value


def _revision(message: dict[str, Any]) -> int | None:
    revision = message.get("revision")
    if revision is not None and (type(revision) is not int or revision < 1):
        raise ActionRefused("invalid_action", "revision must be a positive integer")
    return revision


class ConsoleActions:
    """Carries out actions (see the module doc); :meth:`run` blocks on the store."""

    def __init__(self, store: Store, counted: CountingStore, *, writes: bool) -> None:
        self.store = store
        self.counted = counted
        self.writes = writes

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        """Carry out ``message``; returns what to tell the page.

        Raises:
            ActionRefused: writes are off, or the action is malformed or did not apply.
            evstate.Error: the store refused it (its ``code`` goes back to the page).
        """
        action = message.get("action")
        if action not in ACTIONS:
            raise ActionRefused("invalid_action", f"unknown action {str(action)[:40]!r}")
        if not self.writes:
            raise ActionRefused(
                "console_read_only",
                "the console is read-only: start evstate serve with --console-writes",
            )
        if action == "save":
            return self._save(message)
        if action == "delete":
            old = self.counted.delete(_text(message, "scope"), _text(message, "key"))
            return {"deleted": old is not None}
        name = _text(message, "name")
        if action == "replay_parked":
            return {"replayed": self.store.replay_parked(name, _revision(message))}
        return {"dropped": self.store.drop_parked(name, _revision(message))}

    def _save(self, message: dict[str, Any]) -> dict[str, Any]:
        scope, key = _text(message, "scope"), _text(message, "key")
        value = _json(message, "value")
        ttl_ms = message.get("ttl_ms")
        if ttl_ms is not None and (type(ttl_ms) is not int or ttl_ms < 1):
            raise ActionRefused("invalid_action", "ttl_ms must be a positive integer")
        if message.get("create"):
            result = self.counted.compare_and_set(scope, key, None, value, ttl_ms=ttl_ms)
            if not result["swapped"]:
                raise ActionRefused("key_exists", f"{key!r} already exists in {scope!r}")
            return {"saved": True}
        expected = _json(message, "expected")
        if expected is None:
            self.counted.set(scope, key, value, ttl_ms=ttl_ms)
            return {"saved": True}
        result = self.counted.compare_and_set(scope, key, expected, value, ttl_ms=ttl_ms)
        if not result["swapped"]:
            raise ActionRefused(
                "changed_meanwhile",
                "the value changed since the editor was opened: nothing was written; "
                "reload to edit the current value",
            )
        return {"saved": True}
