"""Conformance: history, events, at(), restore_to, verify, stats and retention on every kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate import UpdateOp

STATS_KEYS = {
    "revision",
    "durable_revision",
    "keys",
    "scopes",
    "segments",
    "log_bytes",
    "snapshots",
    "snapshot_bytes",
    "last_snapshot_revision",
    "oldest_revision",
    "oldest_timestamp",
    "horizon_revision",
    "index_built",
}


def _writes(store: Any) -> None:
    store.set("users", "u1", {"n": 1})  # 1
    store.set("users", "u2", {"n": 2})  # 2
    store.update("users", "u1", [UpdateOp.increment("n", 1)])  # 3
    store.delete("users", "u2")  # 4
    store.set("config", "app", {"theme": "dark"})  # 5


def test_history_of_a_key(store: Any) -> None:
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
    assert events[1].to_iii() == {
        "type": "state",
        "event_type": "state:updated",
        "scope": "users",
        "key": "u1",
        "old_value": {"n": 1},
        "new_value": {"n": 2},
    }


def test_history_bounds_and_limit(store: Any) -> None:
    for i in range(10):
        store.set("s", "k", i)
    assert [e.new_value for e in store.history("s", "k", since=4, until=6)] == [3, 4, 5]
    assert [e.new_value for e in store.history("s", "k", limit=2)] == [0, 1]
    future = datetime.now() + timedelta(days=1)
    assert store.history("s", "k", since=future) == []
    assert len(store.history("s", "k", until=future)) == 10


def test_value_set_long_ago_is_in_history(store: Any) -> None:
    store.set("old", "k", "ancient")
    for i in range(1200):
        store.set("busy", str(i % 10), i)
    assert [e.new_value for e in store.history("old", "k")] == ["ancient"]


def test_events_iterate_lazily_with_filters(store: Any) -> None:
    _writes(store)
    all_events = store.events()
    assert not isinstance(all_events, list)
    assert [e.revision for e in all_events] == [1, 2, 3, 4, 5]
    assert [e.revision for e in store.events(2, 4)] == [2, 3, 4]
    assert [e.revision for e in store.events(scope="users", key="u1")] == [1, 3]
    assert [e.key for e in store.events(scope="config")] == ["app"]
    hour_ago = datetime.now() - timedelta(hours=1)
    assert [e.revision for e in store.events(start=hour_ago)] == [1, 2, 3, 4, 5]
    assert list(store.events(start=datetime.now() + timedelta(hours=1))) == []


def test_events_do_not_include_later_writes(store: Any) -> None:
    _writes(store)
    iterator = store.events()
    store.set("late", "k", 1)
    assert [e.revision for e in iterator] == [1, 2, 3, 4, 5]


def test_at_revision_is_a_read_only_past_view(store: Any) -> None:
    _writes(store)
    view = store.at(3)
    assert view.revision == 3
    assert view.get("users", "u1") == {"n": 2}
    assert view.list("users") == {"u1": {"n": 2}, "u2": {"n": 2}}
    assert view.list_groups() == {"groups": ["users"]}
    assert view.list_keys("users") == ["u1", "u2"]
    assert store.at(4).list_keys("users") == ["u1"]  # u2 deleted at 4
    assert view.list_keys("nowhere") == []
    assert [e.revision for e in view.history("users", "u1")] == [1, 3]
    assert store.at(0).list_groups() == {"groups": []}
    assert store.at(0).timestamp is None
    assert store.at().get("config", "app") == {"theme": "dark"}
    assert store.at(10_000).revision == 5  # past the head: the current state
    assert not hasattr(view, "set")
    with pytest.raises(evstate.InvalidRequestError):
        store.at(-1)


def test_at_time(store: Any) -> None:
    store.set("s", "k", "before")
    time.sleep(0.02)
    middle = datetime.now()
    time.sleep(0.02)
    store.set("s", "k", "after")
    assert store.at(time=middle).get("s", "k") == "before"
    assert store.at(time=middle.timestamp()).get("s", "k") == "before"
    assert store.at(time=datetime.now() + timedelta(days=1)).get("s", "k") == "after"
    assert store.at(time=datetime.now() - timedelta(days=1)).revision == 0
    with pytest.raises(evstate.InvalidRequestError):
        store.at(1, time=middle)


def test_verify_healthy(store: Any) -> None:
    assert store.verify() == []
    _writes(store)
    assert store.snapshot() == 5
    assert store.snapshot() == 5  # nothing changed
    store.set("after", "snap", 1)
    assert store.verify() == []


def test_stats(store: Any) -> None:
    _writes(store)
    stats = store.stats()
    assert set(stats) >= STATS_KEYS
    assert stats["revision"] == 5
    assert stats["durable_revision"] == 5
    assert stats["keys"] == 2
    assert stats["scopes"] == 2
    assert stats["oldest_revision"] == 1
    assert stats["horizon_revision"] == 0
    assert stats["oldest_timestamp"] is not None


def test_retention_by_revisions(make_store: Callable[..., Any]) -> None:
    store = make_store(retention={"revisions": 50})
    for round_no in range(5):
        for i in range(40):
            store.set("s", str(i), round_no * 100 + i)
        store.snapshot()
    store.compact()
    stats = store.stats()
    horizon = stats["horizon_revision"]
    assert 0 < horizon <= store.revision - 50
    assert stats["oldest_revision"] == horizon + 1
    assert store.at(horizon).get("s", "0") is not None
    assert store.at(store.revision).list("s") == store.list("s")
    with pytest.raises(evstate.HistoryCompactedError) as info:
        store.at(horizon - 1)
    assert info.value.horizon == horizon
    with pytest.raises(evstate.HistoryCompactedError):
        store.history("s", "0", since=1)
    with pytest.raises(evstate.HistoryCompactedError):
        list(store.events(1))
    assert next(e.revision for e in store.events()) == horizon + 1
    assert store.history("s", "0")[-1].new_value == 400
    assert store.list("s") == {str(i): 400 + i for i in range(40)}
    assert store.verify() == []


def test_retention_forever_keeps_everything(make_store: Callable[..., Any]) -> None:
    store = make_store(retention="forever")
    for i in range(100):
        store.set("s", "k", i)
        if i % 10 == 0:
            store.snapshot()
    store.compact()
    assert store.stats()["oldest_revision"] == 1
    assert len(store.history("s", "k")) == 100


def test_restore_to_writes_an_independent_file_store(store: Any, tmp_path: Path) -> None:
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
    assert store.get("users", "u3") is None


def test_history_rejects_bad_names(store: Any) -> None:
    with pytest.raises(evstate.InvalidRequestError):
        store.history(1, "k")


@pytest.mark.parametrize("store_kind", ["file", "redis", "follower"])  # memory keeps nothing
def test_reopen_keeps_state_history_and_revisions(
    make_store: Callable[..., Any], store_kind: str
) -> None:
    with make_store() as store:
        _writes(store)
        store.snapshot()
        store.set("tail", "k", True)
    with make_store() as store:
        assert store.revision == 6
        assert store.list("users") == {"u1": {"n": 2}}
        assert [e.revision for e in store.history("users", "u1")] == [1, 3]
        assert store.at(4).get("users", "u2") is None
        assert store.verify() == []
        store.set("more", "k", 1)
        assert store.revision == 7
