"""State maps and replay: what a snapshot plus the events after it add up to.

A state map is ``scope -> key -> encoded value`` (CBOR bytes), the shape of the live table,
of snapshots and of every past state :meth:`~evstate.core.audit.AuditMethods.at` rebuilds.
Every store kind replays through :func:`apply_record`, and checks its history with
:func:`compare_replays`, so "what the log says" has one meaning everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from evstate.events import DELETED, EventRecord
from evstate.values import DEADLINE_MARK, expired

_MARK = bytes([DEADLINE_MARK])

__all__ = [
    "Scopes",
    "apply_record",
    "compare_replays",
    "copy_scopes",
    "live_items",
    "live_scopes",
    "replay",
]

Scopes = dict[str, dict[str, bytes]]
"""``scope -> key -> encoded value``; a scope with no keys is absent."""


def apply_record(scopes: Scopes, record: EventRecord) -> None:
    """Apply one event to a state map (replay)."""
    if record.type_code == DELETED:
        keys = scopes.get(record.scope)
        if keys is not None and keys.pop(record.key, None) is not None and not keys:
            del scopes[record.scope]
    else:
        assert record.new is not None
        keys = scopes.get(record.scope)
        if keys is None:
            scopes[record.scope] = {record.key: record.new}
        else:
            keys[record.key] = record.new


def live_items(items: dict[str, bytes], now_ms: int) -> dict[str, bytes]:
    """``items`` without the keys whose deadline is at or before ``now_ms``."""
    if not any(value[:1] == _MARK for value in items.values()):
        return items
    return {key: value for key, value in items.items() if not expired(value, now_ms)}


def live_scopes(scopes: Scopes, now_ms: int) -> Scopes:
    """A state map as it reads at ``now_ms``: keys past their deadline left out."""
    result: Scopes = {}
    for scope, items in scopes.items():
        live = live_items(items, now_ms)
        if live:
            result[scope] = live
    return result


def copy_scopes(scopes: Scopes) -> Scopes:
    """A copy that replay may change (the values are immutable bytes and are shared)."""
    return {scope: dict(keys) for scope, keys in scopes.items()}


def replay(scopes: Scopes, records: Iterable[EventRecord]) -> int | None:
    """Apply ``records`` to ``scopes`` in order; returns the last one's timestamp (or None)."""
    stamp = None
    for record in records:
        apply_record(scopes, record)
        stamp = record.timestamp
    return stamp


def compare_replays(
    starts: list[tuple[int, Scopes]],
    head: int,
    live: Scopes,
    scan: Callable[[int, int], Iterator[EventRecord]],
) -> list[str]:
    """The replay checks of ``verify``: every way to rebuild ``head`` must agree.

    ``starts`` are the usable starting points, oldest first: ``(revision, state)`` of the
    empty store (revision 0, when the log reaches back to revision 1) and of each valid
    snapshot. The oldest start plus replay, the newest start plus replay and the ``live``
    state must be equal. Returns the problems (empty when they agree).
    """
    if not starts:
        return ["no snapshot covers the revisions before the oldest retained event"]
    rebuilt = []
    for base, scopes in (starts[0], starts[-1]):
        state = copy_scopes(scopes)
        replay(state, scan(base + 1, head))
        rebuilt.append(state)
    problems = []
    if rebuilt[0] != rebuilt[1]:
        problems.append("newest snapshot + replay differs from a full replay")
    if rebuilt[1] != live:
        problems.append("the live state differs from a replay of the log")
    return problems
