"""Paged listings of one scope (``list_entries``): pinned to a revision, resumable.

A listing reads ONE consistent state of its scope, the one at the revision of its first
page: later writes do not show on later pages, and keys deleted since still do. The cursor
names that revision and the position, so a listing does not depend on this process:

- while it is open here, its pages come from a copy of the scope taken at the first page
  (held in memory, at most ``max_open_listings`` of them, each dropped after
  ``listing_idle_ms`` without a page);
- otherwise (the server restarted, another process of a redis fleet, or dropped after
  idling) the scope is rebuilt at that revision from the log, like ``at()`` does, for as
  long as the store retains that revision.

A cursor is single-use (continuing from a cursor twice is ``INVALID_CURSOR``; a listing
rebuilt after a restart accepts its current cursor once), bound to its scope, ``limit`` and
``max_bytes``. It is not a credential: it carries a revision and an offset (never a key),
and reads nothing a caller could not read with ``at()``.

Pages obey ``max_bytes``: the compact UTF-8 JSON of the whole response is at most that
many bytes. An entry that cannot fit even alone is ``ROW_TOO_LARGE``, never skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from evstate.core.arguments import check_name
from evstate.errors import (
    HistoryCompactedError,
    InvalidCursorError,
    InvalidPageLimitsError,
    ListingCapacityError,
    RowTooLargeError,
)
from evstate.values import decode_value, json_size

__all__ = [
    "CURSOR_LENGTH",
    "ListingMethods",
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_BYTES",
    "LIMIT_RANGE",
    "MAX_BYTES_RANGE",
    "Listings",
    "PinnedScope",
    "ScopeSource",
]

LIMIT_RANGE = (1, 1000)
DEFAULT_LIMIT = 100
MAX_BYTES_RANGE = (256, 8_000_000)
DEFAULT_MAX_BYTES = 1_000_000
_MAX_SCOPE_BYTES = 1024  # a longer scope is INVALID_PAGE_LIMITS, as in iii
_REMEMBERED_USES = 100_000  # consumed listings remembered after they leave memory

# Cursor: version u8 | listing id 8s | revision u64 | as_of u64 (ms: keys past their
#         deadline then are not listed) | offset u32 | page u32 | limit u16 | max_bytes u32 |
#         scope digest 8s, then an 8-byte BLAKE2b digest of those bytes; URL-safe base64
#         without padding (fixed length, so page sizes can be bounded).
_CURSOR = struct.Struct("<B8sQQIIHI8s")
_CURSOR_VERSION = 1
_CHECK_BYTES = 8
CURSOR_LENGTH = len(base64.urlsafe_b64encode(bytes(_CURSOR.size + _CHECK_BYTES)).rstrip(b"="))


class _Cursor(NamedTuple):
    listing: bytes
    revision: int
    as_of_ms: int
    offset: int
    page: int
    limit: int
    max_bytes: int
    scope_digest: bytes


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_CHECK_BYTES).digest()


def _scope_digest(scope: str) -> bytes:
    return _digest(scope.encode("utf-8", "surrogatepass"))


def _encode_cursor(cursor: _Cursor) -> str:
    body = _CURSOR.pack(_CURSOR_VERSION, *cursor)
    return base64.urlsafe_b64encode(body + _digest(body)).rstrip(b"=").decode("ascii")


def _decode_cursor(text: object) -> _Cursor:
    if type(text) is not str or len(text) != CURSOR_LENGTH or not text.isascii():
        raise InvalidCursorError("INVALID_CURSOR: the cursor is not one this store issued")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursorError("INVALID_CURSOR: the cursor is not valid base64") from None
    body, check = raw[: _CURSOR.size], raw[_CURSOR.size :]
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(body) != _CURSOR.size or _digest(body) != check or canonical != text:
        raise InvalidCursorError("INVALID_CURSOR: the cursor is damaged or was altered")
    version, *fields = _CURSOR.unpack(body)
    if version != _CURSOR_VERSION:
        raise InvalidCursorError(f"INVALID_CURSOR: unknown cursor version {version}")
    return _Cursor(*fields)


def _limit(name: str, value: object, default: int, bounds: tuple[int, int]) -> int:
    if value is None:
        return default
    low, high = bounds
    if type(value) is not int or not low <= value <= high:
        raise InvalidPageLimitsError(
            f"INVALID_PAGE_LIMITS: {name} must be an integer from {low} to {high}, got {value!r}"[
                :200
            ]
        )
    return value


class PinnedScope:
    """One scope as of one revision: its keys in order and their stored values."""

    __slots__ = ("as_of_ms", "decode", "keys", "last_used", "next_page", "revision", "values")

    def __init__(
        self,
        revision: int,
        values: Mapping[str, Any],
        decode: Callable[[Any], Any] = decode_value,
        *,
        as_of_ms: int = 0,
    ) -> None:
        self.revision = revision
        self.as_of_ms = as_of_ms  # the time whose live keys are listed
        self.values = values
        self.decode = decode  # stored form -> the JSON value (CBOR bytes, or JSON text)
        self.keys = sorted(values)
        self.next_page = 0
        self.last_used = time.monotonic()


class ScopeSource(Protocol):
    """Where a store's listings read their scope (see the module doc)."""

    def _listing_scope_now(self, scope: str) -> PinnedScope:
        """The live keys of the scope as of the newest revision and now, in one step."""

    def _listing_scope_at(self, scope: str, revision: int, as_of_ms: int) -> PinnedScope:
        """The scope as of ``revision``, rebuilt from the log, live at ``as_of_ms``.

        Raises:
            HistoryCompactedError: ``revision`` is no longer retained.
        """


class Listings:
    """The open listings of one store and the paging rules (thread-safe)."""

    def __init__(self, max_open: int, idle_ms: int) -> None:
        self._max_open = max_open
        self._idle = idle_ms / 1000.0
        self._lock = threading.Lock()
        self._open: dict[bytes, PinnedScope] = {}
        self._used: OrderedDict[bytes, int] = OrderedDict()  # listing -> next page, after close

    def open_count(self) -> int:
        """How many listings are held in memory now."""
        with self._lock:
            self._drop_idle()
            return len(self._open)

    def page(
        self,
        source: ScopeSource,
        scope: str,
        cursor: object = None,
        limit: object = None,
        max_bytes: object = None,
    ) -> dict[str, Any]:
        """One page of ``scope``: ``{entries, next_cursor, done, offset, total}``.

        Raises:
            InvalidRequestError: ``scope`` is not a valid name.
            InvalidPageLimitsError, InvalidCursorError, RowTooLargeError,
            ListingCapacityError (see the module doc).
        """
        check_name("scope", scope)
        page_limit = _limit("limit", limit, DEFAULT_LIMIT, LIMIT_RANGE)
        byte_limit = _limit("max_bytes", max_bytes, DEFAULT_MAX_BYTES, MAX_BYTES_RANGE)
        if len(scope.encode("utf-8")) > _MAX_SCOPE_BYTES:
            raise InvalidPageLimitsError(
                f"INVALID_PAGE_LIMITS: scope is longer than {_MAX_SCOPE_BYTES} bytes"
            )
        if cursor is None:
            pinned = source._listing_scope_now(scope)
            listing, page_number, offset = os.urandom(8), 0, 0
        else:
            found = _decode_cursor(cursor)
            if (found.scope_digest, found.limit, found.max_bytes) != (
                _scope_digest(scope),
                page_limit,
                byte_limit,
            ):
                raise InvalidCursorError(
                    "INVALID_CURSOR: the cursor belongs to another scope or other limits"
                )
            pinned = self._claim(source, scope, found)
            listing, page_number, offset = found.listing, found.page, found.offset
        try:
            result = self._build(
                pinned, scope, listing, page_number, offset, page_limit, byte_limit
            )
        except BaseException:
            if cursor is not None:
                with self._lock:
                    pinned.next_page = page_number  # the same cursor may be tried again
            raise
        if not result["done"]:
            self._keep(listing, pinned, page_number + 1)
        elif cursor is not None:
            self._finish(listing, page_number + 1)
        return result

    # ---- which listings are open ---------------------------------------------------------

    def _drop_idle(self) -> None:
        now = time.monotonic()
        for listing, pinned in list(self._open.items()):
            if now - pinned.last_used > self._idle:
                del self._open[listing]
                self._remember(listing, pinned.next_page)

    def _remember(self, listing: bytes, next_page: int) -> None:
        self._used[listing] = next_page
        self._used.move_to_end(listing)
        while len(self._used) > _REMEMBERED_USES:
            self._used.popitem(last=False)

    def _claim(self, source: ScopeSource, scope: str, cursor: _Cursor) -> PinnedScope:
        """The pinned scope ``cursor`` continues, marked as used by this page."""
        with self._lock:
            self._drop_idle()
            pinned = self._open.get(cursor.listing)
            if pinned is None and self._used.get(cursor.listing, 0) > cursor.page:
                raise InvalidCursorError("INVALID_CURSOR: the cursor was already used")
            if pinned is not None:
                if pinned.next_page != cursor.page or pinned.revision != cursor.revision:
                    raise InvalidCursorError("INVALID_CURSOR: the cursor was already used")
                pinned.next_page = cursor.page + 1
                pinned.last_used = time.monotonic()
                return pinned
        try:
            pinned = source._listing_scope_at(scope, cursor.revision, cursor.as_of_ms)
        except HistoryCompactedError:
            raise InvalidCursorError(
                f"INVALID_CURSOR: the listing's revision {cursor.revision} is no longer "
                "retained; start a new listing"
            ) from None
        if cursor.offset > len(pinned.keys):
            raise InvalidCursorError("INVALID_CURSOR: the cursor's offset is past the listing")
        with self._lock:
            if cursor.listing in self._open or self._used.get(cursor.listing, 0) > cursor.page:
                raise InvalidCursorError("INVALID_CURSOR: the cursor was already used")
            pinned.next_page = cursor.page + 1
            self._admit(cursor.listing, pinned)
        return pinned

    def _admit(self, listing: bytes, pinned: PinnedScope) -> None:
        """Hold ``pinned`` in memory (lock held). Raises ListingCapacityError when full."""
        if listing not in self._open and len(self._open) >= self._max_open:
            self._drop_idle()
            if len(self._open) >= self._max_open:
                raise ListingCapacityError(
                    f"SNAPSHOT_CAPACITY: {self._max_open} listings are open (max_open_listings); "
                    "finish one or wait until one has been idle for listing_idle_ms"
                )
        self._open[listing] = pinned

    def _keep(self, listing: bytes, pinned: PinnedScope, next_page: int) -> None:
        with self._lock:
            pinned.next_page = next_page
            pinned.last_used = time.monotonic()
            self._admit(listing, pinned)

    def _finish(self, listing: bytes, next_page: int) -> None:
        with self._lock:
            self._open.pop(listing, None)
            self._remember(listing, next_page)

    # ---- one page ------------------------------------------------------------------------

    @staticmethod
    def _build(
        pinned: PinnedScope,
        scope: str,
        listing: bytes,
        page_number: int,
        offset: int,
        limit: int,
        max_bytes: int,
    ) -> dict[str, Any]:
        keys, values, decode = pinned.keys, pinned.values, pinned.decode
        total = len(keys)
        # The response with no entries and the longest next_cursor and "done" spellings.
        frame = {
            "entries": [],
            "next_cursor": "c" * CURSOR_LENGTH,
            "done": False,
            "offset": offset,
            "total": total,
        }
        budget = max_bytes - json_size(frame)
        entries: list[list[Any]] = []
        used = 0
        for key in keys[offset : offset + limit]:
            value = decode(values[key])
            size = json_size([key, value]) + (1 if entries else 0)
            if used + size > budget:
                if not entries:
                    raise RowTooLargeError(
                        f"ROW_TOO_LARGE: the entry at offset {offset} of this listing needs "
                        f"{size} bytes and cannot fit in a page of max_bytes {max_bytes}"
                    )
                break
            entries.append([key, value])
            used += size
        end = offset + len(entries)
        done = end >= total
        next_cursor = None
        if not done:
            next_cursor = _encode_cursor(
                _Cursor(
                    listing,
                    pinned.revision,
                    pinned.as_of_ms,
                    end,
                    page_number + 1,
                    limit,
                    max_bytes,
                    _scope_digest(scope),
                )
            )
        return {
            "entries": entries,
            "next_cursor": next_cursor,
            "done": done,
            "offset": offset,
            "total": total,
        }


class ListingMethods:
    """``list_entries`` of a store that implements :class:`ScopeSource` (a mixin)."""

    _listings: Listings

    def _check_open(self) -> None:
        raise NotImplementedError

    def _listing_scope_now(self, scope: str) -> PinnedScope:
        raise NotImplementedError

    def _listing_scope_at(self, scope: str, revision: int, as_of_ms: int) -> PinnedScope:
        raise NotImplementedError

    def list_entries(
        self,
        scope: str,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> dict[str, Any]:
        """One page of ``scope``'s entries in key order: iii's ``state::list_entries``.

        Returns ``{"entries": [[key, value], ...], "next_cursor": str | None, "done": bool,
        "offset": int, "total": int}``. Pass ``next_cursor`` (with the same ``limit`` and
        ``max_bytes``) for the next page. Every page of one listing reads the state at the
        revision of its first page (docs/api.md, "Paged listings").

        Raises:
            InvalidPageLimitsError: ``limit`` not 1..1000 or ``max_bytes`` not
                256..8,000,000 (code ``INVALID_PAGE_LIMITS``).
            InvalidCursorError: a bad, reused or foreign cursor, or its revision is no
                longer retained (``INVALID_CURSOR``).
            RowTooLargeError: one entry cannot fit in ``max_bytes`` (``ROW_TOO_LARGE``).
            ListingCapacityError: too many listings open (``SNAPSHOT_CAPACITY``).
        """
        self._check_open()
        return self._listings.page(self, scope, cursor, limit, max_bytes)
