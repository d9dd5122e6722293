"""``list_entries``: pinned, consistent, byte-bounded pages on every store kind.

The rules (docs/api.md, "Paged listings"): keys in sorted order; every page of a listing
reads the state at its first page; a cursor is single-use and bound to its scope, limit and
max_bytes; the compact UTF-8 JSON of each response fits ``max_bytes``; an entry that cannot
fit is ``ROW_TOO_LARGE``; a cursor survives a reopen while its revision is retained.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evstate
from evstate.core.listing import CURSOR_LENGTH


def _size(page: dict[str, Any]) -> int:
    return len(json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _all_pages(store: Any, scope: str, **limits: Any) -> list[dict[str, Any]]:
    pages, cursor = [], None
    for _ in range(100_000):
        page = store.list_entries(scope, cursor, **limits)
        pages.append(page)
        if page["done"]:
            return pages
        cursor = page["next_cursor"]
    raise AssertionError("the listing never ended")


def test_empty_scope(store: Any) -> None:
    assert store.list_entries("nothing") == {
        "entries": [],
        "next_cursor": None,
        "done": True,
        "offset": 0,
        "total": 0,
    }


def test_pages_in_key_order_with_offsets(store: Any) -> None:
    for i in range(25):
        store.set("s", f"k{i:02d}", {"i": i})
    pages = _all_pages(store, "s", limit=10)
    assert [len(p["entries"]) for p in pages] == [10, 10, 5]
    assert [p["offset"] for p in pages] == [0, 10, 20]
    assert all(p["total"] == 25 for p in pages)
    assert [p["done"] for p in pages] == [False, False, True]
    assert pages[-1]["next_cursor"] is None
    entries = [e for p in pages for e in p["entries"]]
    assert entries == [[f"k{i:02d}", {"i": i}] for i in range(25)]


def test_listing_reads_one_snapshot(store: Any) -> None:
    """iii's own case: changes after page 1 do not show on later pages."""
    for key in ("a", "b", "c"):
        store.set("snap", key, key.upper())
    first = store.list_entries("snap", limit=1)
    assert first["entries"] == [["a", "A"]]
    store.set("snap", "b", "B2")
    store.delete("snap", "c")
    store.set("snap", "inserted", "new")
    second = store.list_entries("snap", first["next_cursor"], limit=1)
    assert second["entries"] == [["b", "B"]] and second["total"] == 3
    third = store.list_entries("snap", second["next_cursor"], limit=1)
    assert third["entries"] == [["c", "C"]] and third["done"] and third["total"] == 3
    # a new listing sees the present
    assert [k for k, _ in store.list_entries("snap")["entries"]] == ["a", "b", "inserted"]


def test_cursor_is_single_use(store: Any) -> None:
    for i in range(5):
        store.set("s", f"k{i}", i)
    first = store.list_entries("s", limit=2)
    second = store.list_entries("s", first["next_cursor"], limit=2)
    with pytest.raises(evstate.InvalidCursorError) as info:
        store.list_entries("s", first["next_cursor"], limit=2)
    assert info.value.code == "INVALID_CURSOR"
    last = store.list_entries("s", second["next_cursor"], limit=2)
    assert last["done"]
    with pytest.raises(evstate.InvalidCursorError):
        store.list_entries("s", second["next_cursor"], limit=2)


def test_cursor_bound_to_scope_and_limits(store: Any) -> None:
    for i in range(5):
        store.set("s", f"k{i}", i)
        store.set("t", f"k{i}", i)
    cursor = store.list_entries("s", limit=2, max_bytes=1000)["next_cursor"]
    for scope, limit, max_bytes in (("t", 2, 1000), ("s", 3, 1000), ("s", 2, 1001)):
        with pytest.raises(evstate.InvalidCursorError):
            store.list_entries(scope, cursor, limit=limit, max_bytes=max_bytes)
    # a refused continuation does not consume the cursor
    assert store.list_entries("s", cursor, limit=2, max_bytes=1000)["offset"] == 2


@pytest.mark.parametrize(
    "cursor", ["", "garbage", "A" * 74, 5, ["x"], "é" * 74, "AAAA" * 18 + "AA=", "\x00" * 74]
)
def test_malformed_cursors(store: Any, cursor: Any) -> None:
    store.set("s", "k", 1)
    with pytest.raises(evstate.InvalidCursorError):
        store.list_entries("s", cursor)


def test_altered_cursor_is_refused(store: Any) -> None:
    for i in range(5):
        store.set("s", f"k{i}", i)
    cursor = store.list_entries("s", limit=2)["next_cursor"]
    for position in range(len(cursor)):
        flipped = "A" if cursor[position] != "A" else "B"
        altered = cursor[:position] + flipped + cursor[position + 1 :]
        with pytest.raises(evstate.InvalidCursorError):
            store.list_entries("s", altered, limit=2)


@pytest.mark.parametrize(
    ("limit", "max_bytes"),
    [
        (0, None),
        (1001, None),
        (-1, None),
        (True, None),
        ("5", None),
        (2.0, None),
        (None, 255),
        (None, 8_000_001),
        (None, False),
        (None, "1000"),
    ],
)
def test_page_limits(store: Any, limit: Any, max_bytes: Any) -> None:
    store.set("s", "k", 1)
    options = {k: v for k, v in (("limit", limit), ("max_bytes", max_bytes)) if v is not None}
    with pytest.raises(evstate.InvalidPageLimitsError) as info:
        store.list_entries("s", **options)
    assert info.value.code == "INVALID_PAGE_LIMITS"


def test_limit_and_bytes_bounds_accepted(store: Any) -> None:
    store.set("s", "k", 1)
    for limit, max_bytes in ((1, 256), (1000, 8_000_000)):
        assert store.list_entries("s", limit=limit, max_bytes=max_bytes)["entries"] == [["k", 1]]


def test_long_scope_is_a_limit_error(store: Any) -> None:
    with pytest.raises(evstate.InvalidPageLimitsError):
        store.list_entries("s" * 1025)


def test_row_too_large_is_never_skipped(store: Any) -> None:
    store.set("s", "a", "small")
    store.set("s", "secret-key-name", "x" * 5000)
    store.set("s", "z", "small")
    first = store.list_entries("s", max_bytes=1000)
    assert first["entries"] == [["a", "small"]] and not first["done"]
    with pytest.raises(evstate.RowTooLargeError) as info:
        store.list_entries("s", first["next_cursor"], max_bytes=1000)
    assert info.value.code == "ROW_TOO_LARGE"
    assert "secret-key-name" not in str(info.value)
    # the same cursor can be tried again (it was not consumed by the failure)
    with pytest.raises(evstate.RowTooLargeError):
        store.list_entries("s", first["next_cursor"], max_bytes=1000)
    assert store.list_entries("s", max_bytes=10_000)["total"] == 3


def test_capacity(make_store: Callable[..., Any]) -> None:
    store = make_store(max_open_listings=2)
    for i in range(5):
        store.set("s", f"k{i}", i)
    one = store.list_entries("s", limit=1)
    two = store.list_entries("s", limit=1)
    with pytest.raises(evstate.ListingCapacityError) as info:
        store.list_entries("s", limit=1)
    assert info.value.code == "SNAPSHOT_CAPACITY"
    # open listings keep working; a listing that fits one page needs no room
    assert store.list_entries("s", one["next_cursor"], limit=1)["offset"] == 1
    assert store.list_entries("s", limit=10)["done"]
    cursor = two["next_cursor"]
    for _ in range(10):
        page = store.list_entries("s", cursor, limit=1)
        if page["done"]:
            break
        cursor = page["next_cursor"]
    assert store.list_entries("s", limit=1)["offset"] == 0  # room again


@pytest.mark.parametrize("store_kind", ["file", "redis", "follower"])  # memory keeps nothing
def test_cursor_survives_reopen(make_store: Callable[..., Any], store_kind: str) -> None:
    store = make_store()
    for i in range(30):
        store.set("s", f"k{i:02d}", i)
    first = store.list_entries("s", limit=10)
    store.set("s", "k05", "changed")
    store.delete("s", "k25")
    store.close()
    again = make_store()
    again.set("s", "k15", "changed too")
    rest = again.list_entries("s", first["next_cursor"], limit=10)
    assert rest["entries"] == [[f"k{i:02d}", i] for i in range(10, 20)]
    last = again.list_entries("s", rest["next_cursor"], limit=10)
    assert last["entries"] == [[f"k{i:02d}", i] for i in range(20, 30)] and last["done"]
    with pytest.raises(evstate.InvalidCursorError):
        again.list_entries("s", rest["next_cursor"], limit=10)


def test_call_shape_and_errors(store: Any) -> None:
    for i in range(3):
        store.set("s", f"k{i}", i)
    page = store.call("state::list_entries", {"scope": "s", "limit": 2})
    assert set(page) == {"entries", "next_cursor", "done", "offset", "total"}
    rest = store.call(
        "state::list_entries", {"scope": "s", "limit": 2, "cursor": page["next_cursor"]}
    )
    assert rest["entries"] == [["k2", 2]] and rest["done"]
    for payload, code in (
        ({"scope": "s", "limit": 0}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "max_bytes": 8_000_001}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "cursor": "nope"}, "INVALID_CURSOR"),
        ({}, "deserialization_error"),
    ):
        with pytest.raises(evstate.Error) as info:
            store.call("state::list_entries", payload)
        assert info.value.code == code
        assert code == "deserialization_error" or info.value.message.startswith(code + ":")


names = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs", "Cc"]),
    min_size=1,
    max_size=12,
)
leaf_values = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | names
entry_values = st.recursive(
    leaf_values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=3),
    max_leaves=12,
)


@given(
    entries=st.dictionaries(names, entry_values, min_size=1, max_size=40),
    limit=st.integers(1, 12),
    max_bytes=st.integers(256, 1200),
)
@settings(max_examples=60, deadline=None)
def test_pages_fit_max_bytes_with_escapes_and_multibyte(
    entries: dict[str, Any], limit: int, max_bytes: int
) -> None:
    """Each page's compact UTF-8 JSON fits, and each page is as full as the limits allow."""
    with evstate.open() as store:
        for key, value in entries.items():
            store.set("h", key, value)
        listed: list[list[Any]] = []
        cursor = None
        for _ in range(10_000):
            try:
                page = store.list_entries("h", cursor, limit=limit, max_bytes=max_bytes)
            except evstate.RowTooLargeError:
                # only when the next entry alone cannot fit
                key = sorted(entries)[len(listed)]
                alone = {
                    "entries": [[key, entries[key]]],
                    "next_cursor": "c" * CURSOR_LENGTH,
                    "done": False,
                    "offset": len(listed),
                    "total": len(entries),
                }
                assert _size(alone) > max_bytes
                return
            assert _size(page) <= max_bytes
            assert len(page["entries"]) <= limit
            listed.extend(page["entries"])
            if page["done"]:
                break
            if len(page["entries"]) < limit:  # stopped by bytes: the next one would not fit
                key = sorted(entries)[len(listed)]
                fuller = dict(page, entries=page["entries"] + [[key, entries[key]]])
                fuller["next_cursor"] = "c" * CURSOR_LENGTH
                assert _size(fuller) > max_bytes
            cursor = page["next_cursor"]
        assert listed == [[key, entries[key]] for key in sorted(entries)]


def test_pagination_under_concurrent_batches(store: Any, store_kind: str) -> None:
    """Every listing sees one consistent state while batches move units between keys."""
    keys = [f"acct{i:02d}" for i in range(40)]
    with store.batch() as batch:
        for key in keys:
            batch.set("bank", key, {"units": 25})
    stop = threading.Event()
    failures: list[BaseException] = []

    def transfer() -> None:
        n = 0
        try:
            while not stop.is_set() and n < 2000:
                n += 1
                src, dst = keys[n % 40], keys[(n * 7 + 3) % 40]
                if src == dst:
                    continue
                with store.batch() as batch:
                    batch.update("bank", src, [{"type": "increment", "path": "units", "by": -1}])
                    batch.update("bank", dst, [{"type": "increment", "path": "units", "by": 1}])
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=transfer)
    writer.start()
    try:
        for _ in range(8):
            pages = _all_pages(store, "bank", limit=7)
            entries = [e for p in pages for e in p["entries"]]
            assert [k for k, _ in entries] == keys
            assert sum(v["units"] for _, v in entries) == 1000
            listed = store.list("bank")
            assert sum(v["units"] for v in listed.values()) == 1000
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not failures, failures
