"""Follower triggers: projections of the owner's events with cursor files of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate import follow
from evstate.errors import (
    HistoryCompactedError,
    InvalidRequestError,
    StoreLockedError,
    TriggerTimeoutError,
)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[evstate.Store]:
    store = evstate.open(tmp_path / "store", save_interval_ms=3_600_000)
    yield store
    store.close()


def test_earliest_sees_every_event_in_order_and_resumes_after_a_restart(
    owner: evstate.Store,
) -> None:
    for i in range(20):
        owner.set("users", f"u{i}", {"i": i})
    seen: list[int] = []
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("mirror", lambda e: seen.append(e.revision), start="earliest")
        follower.wait_for_triggers(timeout=5)
        assert seen == list(range(1, 21))
        status = follower.trigger_status()["mirror"]
        assert status["registered"] and status["cursor"] == 20 and status["lag"] == 0
    with follow(owner.path, live=False) as offline:  # type: ignore[arg-type]
        saved = offline.trigger_status()["mirror"]
    assert (saved["registered"], saved["cursor"], saved["parked"]) == (False, 20, 0)
    for i in range(20, 25):
        owner.set("users", f"u{i}", {"i": i})
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("mirror", lambda e: seen.append(e.revision), start="earliest")
        follower.wait_for_triggers(owner.revision, timeout=5)
    assert seen == list(range(1, 26))  # resumed after 20: nothing twice


def test_latest_filters_condition_and_async_handlers(owner: evstate.Store) -> None:
    owner.set("users", "old", 1)
    created: list[str] = []
    changes: list[tuple[Any, Any]] = []

    async def on_config(event: Any) -> None:
        await asyncio.sleep(0)
        changes.append((event.old_value, event.new_value))

    with follow(owner.path) as follower:  # type: ignore[arg-type]

        @follower.trigger(
            "on-user-created", scope="users", condition=lambda e: e.event_type == "created"
        )
        def on_created(event: Any) -> None:
            assert event.message_type == "state" and event.trigger == "on-user-created"
            assert event.store.get("users", event.key) is not None or event.revision > 0
            created.append(event.key)

        follower.trigger("on-config", on_config, scope="config", key="theme")
        owner.set("users", "a", 1)
        owner.set("users", "a", 2)
        owner.set("config", "theme", "dark")
        owner.set("config", "other", "x")
        owner.set("config", "theme", "light")
        owner.set("users", "b", 1)
        follower.wait_for(owner.revision, timeout=5)
        follower.wait_for_triggers(timeout=5)
    assert created == ["a", "b"]
    assert changes == [(None, "dark"), ("dark", "light")]


def test_event_store_is_read_only(owner: evstate.Store) -> None:
    outcome: dict[str, Any] = {}

    def handler(event: Any) -> None:
        outcome["get"] = event.store.get("s", "k")
        outcome["list"] = event.store.list("s")
        with pytest.raises(InvalidRequestError, match="read-only"):
            event.store.set("s", "k2", 1)
        with pytest.raises(InvalidRequestError):
            event.store.update("s", "k2", [])
        with pytest.raises(InvalidRequestError):
            event.store.delete("s", "k")
        outcome["done"] = True

    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("ro", handler)
        owner.set("s", "k", 7)
        follower.wait_for(owner.revision, timeout=5)
        follower.wait_for_triggers(timeout=5)
    assert outcome == {"get": 7, "list": {"k": 7}, "done": True}


def test_a_failing_handler_is_retried_then_parked(owner: evstate.Store) -> None:
    attempts: list[int] = []

    def handler(event: Any) -> None:
        attempts.append(event.revision)
        if event.key == "bad":
            raise RuntimeError("boom")

    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("fragile", handler)
        owner.set("s", "bad", 1)
        owner.set("s", "good", 2)
        follower.wait_for(owner.revision, timeout=5)
        follower.wait_for_triggers(timeout=10)
        assert attempts == [1, 1, 1, 1, 1, 2]
        parked = follower.parked_events("fragile")
        assert [p["revision"] for p in parked] == [1]
        assert "boom" in parked[0]["error"] and parked[0]["attempts"] == 5
        assert follower.trigger_status()["fragile"]["parked"] == 1
        assert follower.drop_parked("fragile") == 1
        assert follower.parked_events("fragile") == []


def test_replay_parked_runs_the_handler_again(owner: evstate.Store) -> None:
    fail = {"on": True}
    done: list[int] = []

    def handler(event: Any) -> None:
        if fail["on"]:
            raise ValueError("not yet")
        done.append(event.revision)

    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("later", handler)
        owner.set("s", "k", 1)
        follower.wait_for(owner.revision, timeout=5)
        follower.wait_for_triggers(timeout=10)
        fail["on"] = False
        assert follower.replay_parked("later") == 1
        assert done == [1] and follower.parked_events("later") == []


def test_one_process_per_trigger_name(owner: evstate.Store) -> None:
    with follow(owner.path) as first, follow(owner.path) as second:  # type: ignore[arg-type]
        first.trigger("only-one", lambda e: None)
        with pytest.raises(StoreLockedError):
            second.trigger("only-one", lambda e: None)
        with pytest.raises(InvalidRequestError):
            first.trigger("only-one", lambda e: None)
        first.unregister_trigger("only-one")
        second.trigger("only-one", lambda e: None)


def test_replay_trigger_moves_the_cursor_back(owner: evstate.Store) -> None:
    for i in range(10):
        owner.set("s", f"k{i}", i)
    seen: list[int] = []
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("again", lambda e: seen.append(e.revision), start="earliest")
        follower.wait_for_triggers(timeout=5)
        follower.replay_trigger("again", 8)
        follower.wait_for_triggers(timeout=5)
        assert seen == [*range(1, 11), 8, 9, 10]
        follower.unregister_trigger("again")
        follower.replay_trigger("again", 10)  # stopped: the cursor file is edited
        assert follower.trigger_status()["again"]["cursor"] == 9
        follower.delete_trigger("again")
        assert "again" not in follower.trigger_status()


def test_a_cursor_behind_the_owners_horizon_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = evstate.open(
        path, segment_size_bytes=4096, save_interval_ms=3_600_000, retention={"revisions": 10}
    )
    try:
        store.set("s", "k", 0)
        with follow(path) as follower:
            follower.trigger("slow", lambda e: None, start="earliest")
            follower.wait_for_triggers(timeout=5)
        for i in range(300):
            store.set("s", f"k{i % 7}", {"i": i, "pad": "z" * 40})
            if i in (200, 299):
                store.snapshot()
        store.compact()
        with follow(path) as follower:
            with pytest.raises(HistoryCompactedError, match="replay_trigger"):
                follower.trigger("slow", lambda e: None)
            with pytest.raises(HistoryCompactedError):
                follower.trigger("new", lambda e: None, start=1)
            oldest = follower.stats()["oldest_revision"]
            follower.replay_trigger("slow", oldest)
            seen: list[int] = []
            follower.trigger("slow", lambda e: seen.append(e.revision))
            follower.wait_for_triggers(timeout=5)
            assert seen == list(range(oldest, store.revision + 1))
    finally:
        store.close()


def test_wait_for_triggers_times_out(owner: evstate.Store) -> None:
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        follower.trigger("stuck", lambda e: None)
        with pytest.raises(TriggerTimeoutError):
            follower.wait_for_triggers(revision=follower.revision + 100, timeout=0.2)


def test_triggers_of_a_follower_that_is_not_live(owner: evstate.Store) -> None:
    seen: list[int] = []
    with follow(owner.path, live=False) as follower:  # type: ignore[arg-type]
        follower.trigger("manual", lambda e: seen.append(e.revision))
        owner.set("s", "k", 1)
        assert follower.wait_for(owner.revision, timeout=5)
        follower.wait_for_triggers(timeout=5)
    assert seen == [1]
