"""The console's parts on their own: diffs, ``?at=``, the sampler, timings, sessions, paging."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

import evstate
from evstate.errors import StoreFailedError, ValueTooLargeError
from evstate.server.console.auth import Gate, Sessions
from evstate.server.console.http import BadRequest, parse_request
from evstate.server.console.listing import PAGE_SIZE, ScopeLister
from evstate.server.console.reading import parse_moment, preview_json
from evstate.server.console.sampler import StatsSampler
from evstate.server.console.timeline import DiffLine, diff_lines, timeline
from evstate.server.metrics import CallCounts, CountingStore
from evstate.timings import SNAPSHOT_SECONDS, SecondsHistogram


def test_diff_of_two_values_shows_what_changed_with_context() -> None:
    old = {"a": 1, "b": [1, 2], "c": "same", "d": 4}
    new = {"d": 4, "c": "same", "b": [1, 3], "a": 1}  # members reordered: not a change
    lines = diff_lines(old, new)
    assert DiffLine("-", "    2") in lines and DiffLine("+", "    3") in lines
    assert all(line.kind in "+- " for line in lines)
    assert diff_lines(old, old) == [DiffLine(" ", "(no change to the value)")]
    big = "x" * 300_000
    assert diff_lines(big, big + "y")[0].kind == "@"


def test_timeline_is_newest_first_and_paged() -> None:
    with evstate.open() as store:
        for i in range(60):
            store.set("s", "k", {"i": i})
        store.delete("s", "k")
        events = store.history("s", "k")
    entries = timeline(events)
    assert len(entries) == 50 and entries[0].event_type == "deleted"
    assert entries[0].diff[0] == DiffLine("-", "{")
    assert entries[-1].index == 11
    older = timeline(events, skip=50)
    assert [e.index for e in older] == list(range(10, -1, -1))
    assert older[-1].event_type == "created" and older[-1].diff[0].kind == "+"
    marked = timeline(events, moment_revision=30)
    assert [e.after_moment for e in marked[:2]] == [True, True] and not marked[-1].after_moment


@pytest.mark.parametrize(
    ("text", "revision", "when"),
    [
        ("42", 42, None),
        ("  7 ", 7, None),
        ("2025-03-01T12:00:00Z", None, datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01T12:00:00", None, datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01", None, datetime(2025, 3, 1, tzinfo=UTC)),
    ],
)
def test_at_takes_a_revision_or_an_iso_time(
    text: str, revision: int | None, when: datetime | None
) -> None:
    moment = parse_moment(text)
    assert moment is not None and moment.revision == revision and moment.time == when


def test_at_refuses_anything_else() -> None:
    assert parse_moment("") is None and parse_moment(None) is None
    for bad in ("-1", "yesterday", "1.5", "2025-13-01"):
        with pytest.raises(BadRequest):
            parse_moment(bad)


def test_value_previews_are_one_bounded_line() -> None:
    assert preview_json({"a": [1, 2]}) == '{"a":[1,2]}'
    long = preview_json({"text": "é" * 500})
    assert len(long) == 160 and long.endswith("\u2026")


def test_paths_are_decoded_per_segment() -> None:
    request = Request("/scopes/a%2Fb/keys/%E2%9C%93?q=x%20y&q=z", Headers({"Cookie": "a=1; b=2"}))
    parsed = parse_request(request)
    assert parsed.segments == ["scopes", "a/b", "keys", "\u2713"]
    assert parsed.query == {"q": "z"} and parsed.cookies == {"a": "1", "b": "2"}
    with pytest.raises(BadRequest):
        parse_request(Request("/scopes/%C3", Headers()))


def test_sampler_rates_and_bounds_its_ring() -> None:
    sampler = StatsSampler(size=3)
    sampler.add({"revision": 10, "log_bytes": 5, "last_snapshot_revision": 4}, now=100.0)
    sample = sampler.add({"revision": 30, "log_bytes": 9}, now=102.0)
    assert sample["write_rate"] == 10.0 and sample["log_bytes"] == 9
    sampler.add({"revision": 30}, now=103.0)
    sampler.add({"revision": 31}, now=104.0)
    assert [s["t"] for s in sampler.samples()] == [102.0, 103.0, 104.0]


def test_sampler_dates_a_new_snapshot() -> None:
    sampler = StatsSampler()
    sampler.add({"revision": 5, "last_snapshot_revision": 3}, now=100.0)
    sampler.add({"revision": 9, "last_snapshot_revision": 9}, now=110.0)
    age = sampler.snapshot_age(now=115.0)
    assert age is not None and 0 <= age <= 5


def test_a_store_without_snapshots_has_no_snapshot_age() -> None:
    """Another store of the process taking a snapshot does not date this one's."""
    SNAPSHOT_SECONDS.observe(0.01)  # as a snapshot of some store in this process would
    sampler = StatsSampler()
    assert sampler.snapshot_age(now=100.0) is None  # no sample yet
    sampler.add({"revision": 5, "last_snapshot_revision": None}, now=100.0)
    assert sampler.snapshot_age(now=101.0) is None


def test_histogram_counts_into_cumulative_buckets_across_threads() -> None:
    histogram = SecondsHistogram((0.001, 0.01, 0.1))

    def record() -> None:
        for value in (0.0005, 0.001, 0.005, 0.05, 5.0) * 200:
            histogram.observe(value)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reading = histogram.read()
    assert reading.count == 4000
    assert reading.buckets == ((0.001, 1600), (0.01, 2400), (0.1, 3200))
    assert reading.total == pytest.approx(800 * (0.0005 + 0.001 + 0.005 + 0.05 + 5.0))
    assert reading.last_observed is not None
    with pytest.raises(ValueError):
        SecondsHistogram((0.1, 0.01))


def test_sessions_expire_and_end() -> None:
    sessions = Sessions(idle_seconds=0.0)
    expired = sessions.create()
    assert not sessions.check(expired)
    sessions = Sessions()
    session = sessions.create()
    assert sessions.check(session) and not sessions.check("guess") and not sessions.check(None)
    sessions.drop(session)
    assert not sessions.check(session)


def test_origin_must_be_this_server() -> None:
    def origin_ok(headers: dict[str, str]) -> bool:
        return Gate.origin_ok(parse_request(Request("/console/live", Headers(headers))))

    assert origin_ok({"Host": "127.0.0.1:5", "Origin": "http://127.0.0.1:5"})
    assert not origin_ok({"Host": "127.0.0.1:5", "Origin": "http://127.0.0.1:6"})
    assert not origin_ok({"Host": "127.0.0.1:5", "Origin": "null"})
    assert origin_ok({"Host": "127.0.0.1:5"})  # no Origin: not a browser page


def test_counting_store_counts_calls_errors_and_the_failure() -> None:
    counts = CallCounts()
    with evstate.open(max_value_bytes=16) as store:
        counted = CountingStore(store, counts)
        counted.set("s", "k", 1)
        counted.get("s", "k")
        counted.list_entries("s", None, None, None)
        with pytest.raises(ValueTooLargeError):
            counted.set("s", "k", "x" * 64)
    calls, errors = counts.read()
    assert calls["set"] == 2 and calls["get"] == 1 and calls["list_entries"] == 1
    assert errors == {"VALUE_TOO_LARGE": 1}
    counts.failed(StoreFailedError("fsync failed"))
    assert counts.failure == "fsync failed"


def test_listing_pages_are_kept_for_reloads() -> None:
    with evstate.open() as store:
        for i in range(250):
            store.set("s", f"k{i:03d}", i)
        lister = ScopeLister(store)
        first = lister.present("s", None, "")
        assert len(first.rows) == PAGE_SIZE and first.total == 250 and not first.done
        assert lister.present("s", None, "") is first  # unchanged: no new listing
        assert first.next_cursor is not None
        second = lister.present("s", first.next_cursor, "")
        assert second.rows[0][0] == "k100"
        assert lister.present("s", first.next_cursor, "") is second  # the single-use cursor
        found = lister.present("s", None, "K24")
        assert [key for key, _ in found.rows] == [f"k24{i}" for i in range(10)]
        past = ScopeLister.past(store.at(revision=120), "s", 100, "")
        assert past.total == 120 and len(past.rows) == 20 and past.next_offset is None
