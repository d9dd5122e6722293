"""A scope's keys, page by page, for ``/scopes/<scope>``.

The present is paged with the store's own paged listing, ``list_entries`` (docs/api.md,
"Paged listings"): the first page pins the scope at the current revision, and the "next"
link carries the page's ``next_cursor``. Two console needs meet two listing rules here:

- **A cursor is single-use**, but a person reloads a page or goes back to it. So the
  pages built from a cursor are kept (their keys and value previews, not the values) in a
  small LRU, by cursor: a reload shows the same page, from the same pinned state.
- **An unfinished listing holds a copy of its scope in the store** (at most
  ``max_open_listings`` of them) until it idles out. So the first page of a scope is also
  kept, by (scope, revision): reloading an unchanged scope opens no new listing.

The filter box keeps the keys that contain its text (case-insensitive). It walks the
listing's pages until it has a page's worth of matches or has spent
:data:`FILTER_BUDGET_SECONDS`; the "next" link then continues from where it stopped, so a
filter over millions of keys answers in bounded time, page by page.

The past (``?at=``) has no paged listing: it is paged by offset over ``view.list(scope)``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from evstate.core.store import Store
from evstate.core.view import StateView
from evstate.server.console.reading import preview_json

__all__ = ["FILTER_BUDGET_SECONDS", "PAGE_SIZE", "ScopeLister", "ScopePage"]

PAGE_SIZE = 100
"""Keys per listing page (``list_entries``'s ``limit``)."""

FILTER_BUDGET_SECONDS = 0.15
"""How long one filtered page may scan the listing before it answers."""

_PAGE_BYTES = 8_000_000  # max_bytes of a listing page: the largest, so few rows are too large
_KEPT_PAGES = 256


@dataclass(slots=True)
class ScopePage:
    """One console page of a scope's keys.

    ``rows`` are ``(key, value preview)``; ``offset`` is the listing position of the first
    key scanned for this page, ``scanned`` how many keys it scanned (more than ``rows`` when
    filtered); ``next_cursor`` continues the listing (None at its end); ``revision`` is the
    revision the listing reads (None when the store's pages do not say); ``done`` is true
    when the whole listing fitted in this page, unfiltered (nothing more to page through).
    """

    rows: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    offset: int = 0
    scanned: int = 0
    next_cursor: str | None = None
    next_offset: int | None = None
    done: bool = False
    revision: int | None = None


class ScopeLister:
    """Builds :class:`ScopePage` s, keeping the ones a reload may ask for (thread-safe)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._by_cursor: OrderedDict[tuple[str, str, str], ScopePage] = OrderedDict()
        self._first: OrderedDict[tuple[str, str], tuple[int, ScopePage]] = OrderedDict()

    def _keep(self, table: OrderedDict, key: object, value: object) -> None:  # type: ignore[type-arg]
        with self._lock:
            table[key] = value
            table.move_to_end(key)
            while len(table) > _KEPT_PAGES:
                table.popitem(last=False)

    def present(self, scope: str, cursor: str | None, needle: str) -> ScopePage:
        """The page of the present listing that ``cursor`` continues (None: the first).

        Raises:
            InvalidCursorError: a cursor that is neither kept here nor usable.
            ListingCapacityError: the store holds too many open listings.
            RowTooLargeError: a value over 8 MB.
        """
        needle = needle.casefold()
        if cursor is None:
            revision = self._store.revision
            with self._lock:
                first = self._first.get((scope, needle))
            if first is not None and first[0] == revision:
                return first[1]
            page = self._build(scope, None, needle)
            page.revision = revision
            self._keep(self._first, (scope, needle), (revision, page))
            return page
        with self._lock:
            kept = self._by_cursor.get((scope, needle, cursor))
        if kept is not None:
            return kept
        page = self._build(scope, cursor, needle)
        self._keep(self._by_cursor, (scope, needle, cursor), page)
        return page

    def _build(self, scope: str, cursor: str | None, needle: str) -> ScopePage:
        store = self._store
        page = ScopePage()
        deadline = time.monotonic() + FILTER_BUDGET_SECONDS
        started = False
        while True:
            listed = store.list_entries(scope, cursor, PAGE_SIZE, _PAGE_BYTES)
            if not started:
                page.offset, page.total, started = listed["offset"], listed["total"], True
            entries = listed["entries"]
            page.scanned += len(entries)
            for key, value in entries:
                if not needle or needle in key.casefold():
                    page.rows.append((key, preview_json(value)))
            cursor = listed["next_cursor"]
            if listed["done"] or not needle:
                page.done = bool(listed["done"]) and not needle and page.offset == 0
                break
            if len(page.rows) >= PAGE_SIZE // 2 or time.monotonic() > deadline:
                break
        page.next_cursor = cursor
        return page

    @staticmethod
    def past(view: StateView, scope: str, offset: int, needle: str) -> ScopePage:
        """A page of ``scope`` as of ``view``, from key number ``offset`` (sorted order).

        Filtered, it scans on from ``offset`` until a page's worth of matches.
        """
        values = view.list(scope)
        keys = list(values)
        needle = needle.casefold()
        page = ScopePage(total=len(keys), offset=offset, revision=view.revision)
        position = offset
        while position < len(keys) and len(page.rows) < PAGE_SIZE:
            key = keys[position]
            position += 1
            if not needle or needle in key.casefold():
                page.rows.append((key, preview_json(values[key])))
        page.scanned = position - offset
        page.next_offset = position if position < len(keys) else None
        return page
