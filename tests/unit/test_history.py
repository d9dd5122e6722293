"""Audit history, events, point-in-time views, restore, verify and stats."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import evstate
from evstate import UpdateOp


def _writes(store: evstate.Store) -> None:
    store.set("users", "u1", {"n": 1})  # 1
    store.set("users", "u2", {"n": 2})  # 2
    store.update("users", "u1", [UpdateOp.increment("n", 1)])  # 3
    store.delete("users", "u2")  # 4
    store.set("config", "app", {"theme": "dark"})  # 5


def test_history_of_a_key(store: evstate.Store) -> None:
    _writes(store)
    events = store.history("users", "u1")
    assert [(e.revision, e.event_type, e.old_value, e.new_value) for e in events] == [
        (1, "created", None, {"n": 1}),
        (3, "updated", {"n": 1}, {"n": 2}),
    ]
    assert all(e.message_type == "state" and e.scope == "users" for e in events)
    assert events[0].timestamp <= events[1].timestamp
    deleted = store.history("users", "u2")[-1]
    assert (deleted.event_type, deleted.old_value, deleted.new_value) == ("deleted", {"n": 2}, None)
    assert store.history("users", "nobody") == []


def test_history_bounds_and_limit(store: evstate.Store) -> None:
    for i in range(10):
        store.set("s", "k", i)
    assert [e.new_value for e in store.history("s", "k", since=4, until=6)] == [3, 4, 5]
    assert [e.new_value for e in store.history("s", "k", limit=2)] == [0, 1]
    future = datetime.now() + timedelta(days=1)
    assert store.history("s", "k", since=future) == []
    assert len(store.history("s", "k", until=future)) == 10


def test_value_set_long_ago_is_in_history(store: evstate.Store) -> None:
    store.set("old", "k", "ancient")
    for i in range(2000):
        store.set("busy", str(i % 10), i)
    assert [e.new_value for e in store.history("old", "k")] == ["ancient"]


def test_events_iterate_lazily_with_filters(store: evstate.Store) -> None:
    _writes(store)
    all_events = store.events()
    assert not isinstance(all_events, list)
    assert [e.revision for e in all_events] == [1, 2, 3, 4, 5]
    assert [e.revision for e in store.events(2, 4)] == [2, 3, 4]
    assert [e.revision for e in store.events(scope="users", key="u1")] == [1, 3]
    assert [e.key for e in store.events(scope="config")] == ["app"]
    assert [e.revision for e in store.events(start=datetime.now() - timedelta(hours=1))] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert list(store.events(start=datetime.now() + timedelta(hours=1))) == []


def test_at_revision_is_a_read_only_past_view(store: evstate.Store) -> None:
    _writes(store)
    view = store.at(3)
    assert view.revision == 3
    assert view.get("users", "u1") == {"n": 2}
    assert view.list("users") == {"u1": {"n": 2}, "u2": {"n": 2}}
    assert view.list_groups() == {"groups": ["users"]}
    assert [e.revision for e in view.history("users", "u1")] == [1, 3]
    assert store.at(0).list_groups() == {"groups": []}
    assert store.at().get("config", "app") == {"theme": "dark"}
    assert store.at(10_000).revision == 5  # past the head: the current state
    assert not hasattr(view, "set")


def test_at_time(store: evstate.Store) -> None:
    store.set("s", "k", "before")
    time.sleep(0.02)
    middle = datetime.now()
    time.sleep(0.02)
    store.set("s", "k", "after")
    assert store.at(time=middle).get("s", "k") == "before"
    assert store.at(time=middle.timestamp()).get("s", "k") == "before"
    assert store.at(time=datetime.now() + timedelta(days=1)).get("s", "k") == "after"
    with pytest.raises(evstate.InvalidRequestError):
        store.at(1, time=middle)


def test_verify_healthy(store: evstate.Store) -> None:
    _writes(store)
    store.snapshot()
    store.set("after", "snap", 1)
    assert store.verify() == []


def test_stats(store: evstate.Store) -> None:
    _writes(store)
    stats = store.stats()
    assert stats["revision"] == 5
    assert stats["keys"] == 2
    assert stats["scopes"] == 2
    assert stats["oldest_revision"] == 1
    assert stats["horizon_revision"] == 0
    assert stats["oldest_timestamp"] is not None


def test_history_rejects_bad_names(store: evstate.Store) -> None:
    with pytest.raises(evstate.InvalidRequestError):
        store.history(1, "k")  # type: ignore[arg-type]


# ---- file stores ---------------------------------------------------------------------


def test_snapshot_then_reopen_replays_only_the_tail(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        for i in range(100):
            store.set("s", str(i), i)
        assert store.snapshot() == 100
        assert (tmp_path / f"{100:020d}.snap").exists()
        store.set("s", "tail", True)
        assert store.snapshot() == 101
        assert store.snapshot() == 101  # nothing changed: no new snapshot
    with evstate.open(tmp_path) as store:
        assert store.revision == 101
        assert len(store.list("s")) == 101
        assert store.verify() == []


def test_periodic_snapshots(tmp_path: Path) -> None:
    with evstate.open(tmp_path, save_interval_ms=100) as store:
        store.set("s", "k", 1)
        deadline = time.monotonic() + 5
        while store.stats()["last_snapshot_revision"] != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.stats()["last_snapshot_revision"] == 1


def test_retention_by_revisions_deletes_only_covered_segments(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention={"revisions": 50}) as store:
        for round_no in range(5):
            for i in range(40):
                store.set("s", str(i), round_no * 100 + i)
            store.snapshot()
        segments_before = store.stats()["segments"]
        result = store.compact()
        stats = store.stats()
        assert result["segments_deleted"] > 0
        assert stats["segments"] < segments_before
        horizon = stats["horizon_revision"]
        assert 0 < horizon <= store.revision - 50
        # everything from the horizon on is still answerable
        assert store.at(horizon).get("s", "0") is not None
        assert store.at(store.revision).list("s") == store.list("s")
        with pytest.raises(evstate.HistoryCompactedError) as info:
            store.at(horizon - 1)
        assert info.value.horizon == horizon
        with pytest.raises(evstate.HistoryCompactedError):
            store.history("s", "0", since=1)
        assert store.history("s", "0")[-1].new_value == 400
        assert store.verify() == []
    with evstate.open(tmp_path) as store:
        assert store.list("s") == {str(i): 400 + i for i in range(40)}
        assert store.verify() == []


def test_retention_forever_keeps_everything(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention="forever") as store:
        for i in range(100):
            store.set("s", "k", i)
            if i % 10 == 0:
                store.snapshot()
        store.compact()
        assert store.stats()["oldest_revision"] == 1
        assert len(store.history("s", "k")) == 100


def test_retention_by_duration(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention={"duration": "200ms"}) as store:
        for i in range(20):
            store.set("s", "k", i)
        store.snapshot()
        time.sleep(0.3)
        store.set("s", "k", "new")
        store.snapshot()
        store.compact()
        assert store.stats()["horizon_revision"] >= 20
        assert [e.new_value for e in store.history("s", "k")] == ["new"]


def test_restore_to_writes_an_independent_store(tmp_path: Path) -> None:
    with evstate.open(tmp_path / "src") as store:
        _writes(store)
        restored = store.restore_to(tmp_path / "dst", revision=3)
        with pytest.raises(evstate.StorageError):
            store.restore_to(tmp_path / "dst", revision=2)
    with evstate.open(restored) as copy:
        assert copy.revision == 3
        assert copy.list("users") == {"u1": {"n": 2}, "u2": {"n": 2}}
        copy.set("users", "u3", 3)
        assert copy.revision == 4
        assert copy.verify() == []
    with evstate.open(tmp_path / "src") as store:
        assert store.get("users", "u3") is None


def test_verify_reports_a_corrupt_snapshot(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        _writes(store)
        store.snapshot()
        snap = tmp_path / f"{5:020d}.snap"
        data = bytearray(snap.read_bytes())
        data[40] ^= 0xFF
        snap.write_bytes(bytes(data))
        problems = store.verify()
    assert problems and "snapshot" in problems[0]


def test_memory_store_history_and_retention() -> None:
    with evstate.open(retention={"revisions": 10}) as store:
        for i in range(30):
            store.set("s", "k", i)
        store.compact()
        assert store.stats()["horizon_revision"] == 20
        assert [e.new_value for e in store.history("s", "k")] == list(range(20, 30))
        assert store.at(25).get("s", "k") == 24
        with pytest.raises(evstate.HistoryCompactedError):
            store.at(5)


def test_events_before_the_horizon_raise(make_store: Callable[..., evstate.Store]) -> None:
    store = make_store(retention={"revisions": 5})
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    oldest = store.stats()["oldest_revision"]
    assert oldest > 1
    with pytest.raises(evstate.HistoryCompactedError):
        list(store.events(1))
    assert next(e.revision for e in store.events()) == oldest


def test_times_before_the_horizon_raise(make_store: Callable[..., evstate.Store]) -> None:
    store = make_store(retention={"revisions": 5})
    long_ago = datetime.now() - timedelta(days=1)
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    assert store.stats()["oldest_revision"] > 1
    with pytest.raises(evstate.HistoryCompactedError):
        store.at(time=long_ago)
    with pytest.raises(evstate.HistoryCompactedError):
        store.history("s", "k", since=long_ago)
    with pytest.raises(evstate.HistoryCompactedError):
        list(store.events(long_ago))
    now = datetime.now() + timedelta(seconds=1)
    assert store.at(time=now).get("s", "k") == 39
