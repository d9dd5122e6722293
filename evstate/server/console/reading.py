"""Reading the store for the console: time travel, past views, scope counts, JSON text.

``?at=`` on a console page names a past state: a revision (``?at=1200``) or a time
(``?at=2025-03-01T12:00:00Z``, ISO 8601; without a zone it is UTC). :class:`PastViews`
answers it with ``store.at(...)`` and keeps the two newest views, so that moving around one
past state (a scope's pages, its keys) rebuilds it once; a view holds a copy of the whole
state then, which is why no more are kept.

Scope key counts: the store offers counts for the whole store (``stats()``) but not per
scope, so :class:`ScopeCounts` counts ``list_keys(scope)`` for each scope and keeps the
answer until the revision moves (about 150 ms per million keys).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evstate.core.store import Store
from evstate.core.view import StateView
from evstate.server.console.http import BadRequest

__all__ = [
    "Moment",
    "PastViews",
    "ScopeCounts",
    "format_time",
    "parse_moment",
    "preview_json",
    "pretty_json",
]

_KEPT_VIEWS = 2
_PRETTY_LIMIT = 2_000_000  # characters of a value shown on the key page; the rest is cut


@dataclass(frozen=True, slots=True)
class Moment:
    """A past state asked for with ``?at=``: a revision, or a time (UTC)."""

    text: str
    revision: int | None = None
    time: datetime | None = None


def parse_moment(text: str | None) -> Moment | None:
    """The moment ``?at=`` names, None for the present (absent or empty).

    Raises:
        BadRequest: neither a revision (an integer >= 0) nor an ISO 8601 time.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.isdigit():
        return Moment(text, revision=int(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"?at= takes a revision (a number) or an ISO 8601 time, not {text[:80]!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Moment(text, time=when)


def format_time(ms: int | None) -> str:
    """An event timestamp (ms since the epoch) as ``2025-03-01 12:00:00.123 UTC``."""
    if ms is None:
        return "-"
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d} UTC"


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (non-ASCII kept), cut at about 2 MB with a note."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > _PRETTY_LIMIT:
        return text[:_PRETTY_LIMIT] + f"\n... ({len(text) - _PRETTY_LIMIT:,} more characters)"
    return text


def preview_json(value: Any, limit: int = 160) -> str:
    """``value`` as compact JSON on one line, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class PastViews:
    """``store.at()`` views by revision, the newest :data:`_KEPT_VIEWS` kept (thread-safe).

    Also keeps, per view, the key counts of its scopes once asked (:meth:`counts`).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._views: OrderedDict[int, StateView] = OrderedDict()
        self._counts: dict[int, list[tuple[str, int]]] = {}

    def view(self, moment: Moment) -> StateView:
        """The state at ``moment``.

        Raises:
            HistoryCompactedError: the moment is before the retained history.
            InvalidRequestError: a bad revision or time.
        """
        if moment.revision is not None:
            with self._lock:
                found = self._views.get(moment.revision)
                if found is not None:
                    self._views.move_to_end(moment.revision)
                    return found
            view = self._store.at(revision=moment.revision)
        else:
            view = self._store.at(time=moment.time)
        with self._lock:
            self._views[view.revision] = view
            self._views.move_to_end(view.revision)
            if moment.revision is not None and moment.revision != view.revision:
                self._views[moment.revision] = view  # at() moved it (inside a batch, future)
            while len(self._views) > _KEPT_VIEWS:
                revision, _ = self._views.popitem(last=False)
                self._counts.pop(revision, None)
        return view

    def counts(self, view: StateView) -> list[tuple[str, int]]:
        """``(scope, keys)`` of every scope of ``view``, sorted by scope."""
        with self._lock:
            known = self._counts.get(view.revision)
        if known is not None:
            return known
        counts = [(scope, len(view.list(scope))) for scope in view.list_groups()["groups"]]
        with self._lock:
            if view.revision in self._views:
                self._counts[view.revision] = counts
        return counts


class ScopeCounts:
    """The present scopes with their key counts, computed once per revision (thread-safe)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._revision = -1
        self._counts: list[tuple[str, int]] = []

    def counts(self) -> tuple[int, list[tuple[str, int]]]:
        """``(revision, [(scope, keys), ...])`` as of a recent revision, sorted by scope."""
        store = self._store
        revision = store.revision
        with self._lock:
            if revision == self._revision:
                return revision, self._counts
            counts = [
                (scope, len(store.list_keys(scope))) for scope in store.list_groups()["groups"]
            ]
            self._revision, self._counts = revision, counts
            return revision, counts
