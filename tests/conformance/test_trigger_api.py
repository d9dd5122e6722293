"""Conformance: durable triggers behave the same on the memory, file and redis stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import evstate
from evstate import UpdateOp
from tests.conformance.conftest import STORE_KINDS


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Triggers whose handlers write need a store (follower triggers: tests/follower)."""
    return str(request.param)


def test_handler_sees_every_event_in_order(store: Any) -> None:
    seen: list[Any] = []
    store.trigger("all", seen.append)
    store.set("users", "u1", {"n": 1})
    store.update("users", "u1", [UpdateOp.increment("n", 1)])
    store.delete("users", "u1")
    store.wait_for_triggers(timeout=5)
    assert [(e.event_type, e.old_value, e.new_value) for e in seen] == [
        ("created", None, {"n": 1}),
        ("updated", {"n": 1}, {"n": 2}),
        ("deleted", {"n": 2}, None),
    ]
    first = seen[0]
    assert isinstance(first, evstate.TriggerEvent)
    assert isinstance(first.store, evstate.TriggerContext)
    assert first.message_type == "state"
    assert (first.scope, first.key, first.revision, first.trigger) == ("users", "u1", 1, "all")
    assert first.timestamp > 0
    assert first.to_iii()["event_type"] == "state:created"
    assert [e.revision for e in seen] == [1, 2, 3]


def test_decorator_filters_and_conditions(store: Any) -> None:
    got: dict[str, list[str]] = {"scope": [], "key": [], "cond": [], "async": []}

    @store.trigger("by-scope", scope="users")
    def by_scope(event: Any) -> None:
        got["scope"].append(event.key)

    handle = store.trigger("by-key", lambda e: got["key"].append(e.key), scope="users", key="u2")
    assert isinstance(handle, evstate.Trigger)
    store.trigger(
        "by-condition",
        lambda e: got["cond"].append(e.key),
        condition=lambda e: e.event_type == "created",
    )

    async def async_condition(event: Any) -> bool:
        return bool(event.new_value and event.new_value.get("vip"))

    async def async_handler(event: Any) -> None:
        got["async"].append(event.key)

    store.trigger("async", async_handler, condition=async_condition)
    store.set("users", "u1", {"vip": True})
    store.set("users", "u2", {})
    store.set("users", "u2", {"vip": True})
    store.set("config", "c", 1)
    store.wait_for_triggers(timeout=5)
    assert callable(by_scope)
    assert got["scope"] == ["u1", "u2", "u2"]
    assert got["key"] == ["u2", "u2"]
    assert got["cond"] == ["u1", "u2", "c"]
    assert got["async"] == ["u1", "u2"]


def test_start_positions(store: Any) -> None:
    store.set("s", "a", 1)
    store.set("s", "b", 2)
    store.set("s", "c", 3)
    latest: list[int] = []
    earliest: list[int] = []
    from_two: list[int] = []
    store.trigger("latest", lambda e: latest.append(e.revision))
    store.trigger("earliest", lambda e: earliest.append(e.revision), start="earliest")
    store.trigger("from-two", lambda e: from_two.append(e.revision), start=2)
    store.set("s", "d", 4)
    store.wait_for_triggers(timeout=5)
    assert latest == [4]
    assert earliest == [1, 2, 3, 4]
    assert from_two == [2, 3, 4]
    for bad in ("sometime", 0, -1, 1.5):
        with pytest.raises(evstate.InvalidRequestError):
            store.trigger("bad", print, start=bad)


def test_unregister_keeps_the_cursor(store: Any) -> None:
    seen: list[int] = []
    handle = store.trigger("t", lambda e: seen.append(e.revision))
    store.set("s", "k", 1)
    store.wait_for_triggers(timeout=5)
    handle.unregister()
    store.set("s", "k", 2)  # while away
    store.set("s", "k", 3)
    assert store.trigger_status()["t"]["registered"] is False
    store.trigger("t", lambda e: seen.append(e.revision), start="latest")
    store.wait_for_triggers(timeout=5)
    assert seen == [1, 2, 3]


def test_registering_a_name_twice_is_refused(store: Any) -> None:
    store.trigger("t", print)
    with pytest.raises(evstate.InvalidRequestError):
        store.trigger("t", print)
    for name in ("", 3, None):
        with pytest.raises(evstate.InvalidRequestError):
            store.trigger(name, print)


def test_delete_and_replay(store: Any) -> None:
    seen: list[int] = []
    store.trigger("t", lambda e: seen.append(e.revision))
    for i in range(3):
        store.set("s", "k", i)
    store.wait_for_triggers(timeout=5)
    store.replay_trigger("t", 2)
    store.wait_for_triggers(timeout=5)
    assert seen == [1, 2, 3, 2, 3]
    with pytest.raises(evstate.InvalidRequestError):
        store.replay_trigger("t", 0)
    store.delete_trigger("t")
    assert "t" not in store.trigger_status()
    store.trigger("t", lambda e: seen.append(e.revision))  # a new trigger: starts at latest
    store.set("s", "k", 9)
    store.wait_for_triggers(timeout=5)
    assert seen[-1] == 4


def test_failing_handler_is_retried_then_parked(store: Any) -> None:
    store._triggers.delivery.backoff = 0.001
    attempts: dict[int, int] = {}
    ok: list[int] = []

    def flaky(event: Any) -> None:
        attempts[event.revision] = attempts.get(event.revision, 0) + 1
        if event.new_value == "poison":
            raise RuntimeError("cannot handle poison")
        if event.new_value == "twice" and attempts[event.revision] < 3:
            raise RuntimeError("transient")
        ok.append(event.revision)

    store.trigger("t", flaky)
    store.set("s", "a", "fine")
    store.set("s", "b", "poison")
    store.set("s", "c", "twice")
    store.wait_for_triggers(timeout=10)
    assert ok == [1, 3]
    assert attempts[2] == store._triggers.delivery.max_attempts
    parked = store.parked_events("t")
    assert [p["revision"] for p in parked] == [2]
    assert "cannot handle poison" in parked[0]["error"]
    assert parked[0]["event"]["new_value"] == "poison"
    status = store.trigger_status()["t"]
    assert status["parked"] == 1 and status["last_error"] == "RuntimeError: transient"
    assert store.replay_parked("t") == 0  # still failing: stays parked
    assert store.parked_events("t")[0]["attempts"] == store._triggers.delivery.max_attempts + 1
    assert store.drop_parked("t", 2) == 1
    assert store.parked_events("t") == []
    with pytest.raises(evstate.InvalidRequestError):
        store.parked_events("nobody")


def test_replay_parked_success(store: Any) -> None:
    store._triggers.delivery.backoff = 0.001
    broken = {"on": True}
    handled: list[int] = []

    def handler(event: Any) -> None:
        if broken["on"]:
            raise ValueError("down")
        handled.append(event.revision)
        event.store.update("out", "n", [UpdateOp.increment("v", 1)])

    store.trigger("t", handler)
    store.set("s", "k", 1)
    store.wait_for_triggers(timeout=10)
    assert len(store.parked_events("t")) == 1
    broken["on"] = False
    assert store.replay_parked("t") == 1
    assert handled == [1]
    assert store.parked_events("t") == []
    assert store.get("out", "n") == {"v": 1}
    assert store.drop_parked("t") == 0


def test_slow_trigger_blocks_neither_writers_nor_others(store: Any) -> None:
    release = threading.Event()
    fast: list[int] = []
    store.trigger("slow", lambda e: release.wait(10))
    store.trigger("fast", lambda e: fast.append(e.revision))
    started = time.monotonic()
    for i in range(50):
        store.set("s", str(i), i)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while len(fast) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fast) == 50
    assert store.trigger_status()["slow"]["lag"] > 0
    with pytest.raises(evstate.TriggerTimeoutError):
        store.wait_for_triggers(timeout=0.2)
    release.set()
    store.wait_for_triggers(timeout=10)


def test_triggers_enabled_pauses_and_resumes(make_store: Callable[..., Any]) -> None:
    store = make_store(triggers_enabled=False)
    assert store.triggers_enabled is False
    seen: list[int] = []
    store.trigger("t", lambda e: seen.append(e.revision))
    store.set("s", "k", 1)
    time.sleep(0.2)
    assert seen == []
    assert store.trigger_status()["t"]["enabled"] is False
    store.triggers_enabled = True
    store.wait_for_triggers(timeout=5)
    assert seen == [1]


def test_writes_through_event_store_are_exactly_once(store: Any) -> None:
    @store.trigger("count", scope="in")
    def count(event: Any) -> None:
        result = event.store.update("out", "counter", [UpdateOp.increment("n", 1)])
        assert result["new_value"]["n"] >= 1
        event.store.set("out", f"seen-{event.key}", event.revision)
        assert event.store.get("out", f"seen-{event.key}") == event.revision
        event.store.delete("out", "never")

    for i in range(100):
        store.set("in", str(i % 10), i)
    store.wait_for_triggers(timeout=10)
    assert store.get("out", "counter") == {"n": 100}
    assert store.get("out", "seen-9") == store.history("in", "9")[-1].revision
    assert store.trigger_status()["count"]["cursor"] >= 100
    assert store.verify() == []


def test_handler_writes_race_with_direct_writes(store: Any) -> None:
    """Updates through event.store apply to the state current at commit: none is lost."""
    store.trigger("t", lambda e: e.store.update("c", "n", [UpdateOp.increment("v", 1)]), scope="in")

    def direct() -> None:
        for _ in range(200):
            store.update("c", "n", [UpdateOp.increment("v", 1)])

    writer = threading.Thread(target=direct)
    writer.start()
    for i in range(200):
        store.set("in", "k", i)
    writer.join()
    store.wait_for_triggers(timeout=20)
    assert store.get("c", "n") == {"v": 400}


def test_trigger_status_fields(store: Any) -> None:
    store.trigger("t", lambda e: None, scope="s")
    store.set("s", "k", 1)
    store.wait_for_triggers(timeout=5)
    status = store.trigger_status()["t"]
    assert status == {
        "registered": True,
        "cursor": 1,
        "lag": 0,
        "parked": 0,
        "last_error": None,
        "delivered": 1,
        "scope": "s",
        "key": None,
        "enabled": True,
    }


@pytest.mark.parametrize("store_kind", ["file", "redis"])  # memory keeps nothing
def test_cursor_survives_reopen_and_backlog_is_delivered(
    make_store: Callable[..., Any], store_kind: str
) -> None:
    seen: list[int] = []
    with make_store() as store:
        store.trigger("t", lambda e: seen.append(e.revision))
        store.set("s", "k", 1)
        store.wait_for_triggers(timeout=5)
    with make_store() as store:
        store.set("s", "k", 2)  # no trigger registered in this session
        store.set("s", "k", 3)
    with make_store() as store:
        store.trigger("t", lambda e: seen.append(e.revision))
        store.wait_for_triggers(timeout=5)
    assert seen == [1, 2, 3]


def test_cursor_behind_the_horizon_is_a_clear_error(make_store: Callable[..., Any]) -> None:
    store = make_store(retention={"revisions": 5})
    store.trigger("old", print, start="earliest").unregister()
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    oldest = store.stats()["oldest_revision"]
    assert oldest > 1
    with pytest.raises(evstate.HistoryCompactedError) as info:
        store.trigger("old", print)
    assert "replay_trigger" in str(info.value)
    with pytest.raises(evstate.HistoryCompactedError):
        store.trigger("new", print, start=1)
    with pytest.raises(evstate.HistoryCompactedError):
        store.replay_trigger("old", 1)
    store.replay_trigger("old", oldest)
    store.trigger("old", lambda e: None)
    store.wait_for_triggers(timeout=5)


def test_registered_trigger_pins_retention(make_store: Callable[..., Any]) -> None:
    store = make_store(retention={"revisions": 5})
    gate = threading.Event()
    store.trigger("lagging", lambda e: gate.wait(10), start="earliest")
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    assert store.stats()["oldest_revision"] == 1  # the trigger still needs revision 2
    gate.set()
    store.wait_for_triggers(timeout=10)
