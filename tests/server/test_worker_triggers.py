"""Unit tests of the worker-trigger mapping (evstate.server.triggers) with a fake store."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest

from evstate.server.protocol import CallError
from evstate.server.triggers import (
    MISSING,
    StateTriggerConfig,
    TriggerConfigError,
    WorkerTriggers,
    durable_name,
    parse_trigger_config,
)


class FakeStore:
    def __init__(self) -> None:
        self.registered: dict[str, dict[str, Any]] = {}
        self.unregistered: list[str] = []

    def trigger(self, name: str, handler: Callable[[Any], Any] | None = None, **kw: Any) -> None:
        assert name not in self.registered
        self.registered[name] = {"handler": handler, **kw}

    def unregister_trigger(self, name: str, *, wait: bool = True) -> None:
        assert wait is False  # never block the event loop
        self.registered.pop(name)
        self.unregistered.append(name)


class FakeEvent:
    revision = 7

    def to_iii(self) -> dict[str, Any]:
        return {
            "type": "state",
            "event_type": "state:created",
            "scope": "s",
            "key": "k",
            "old_value": None,
            "new_value": 1,
        }


class Calls:
    """A fake ``invoke``: answers from a table, records every call."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.made: list[tuple[str, Any, Any]] = []

    def __call__(
        self, function_id: str, data: Any, metadata: Any, live: Callable[[], bool]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not live():
            future.set_exception(CallError("invocation_stopped", "Invocation stopped"))
            return future
        self.made.append((function_id, data, metadata))
        answer = self.answers.get(function_id)
        if isinstance(answer, Exception):
            future.set_exception(answer)
        else:
            future.set_result(answer)
        return future


def test_config_parsing() -> None:
    assert parse_trigger_config(MISSING) == StateTriggerConfig()
    assert parse_trigger_config({"scope": "a", "key": None, "x": 1}) == StateTriggerConfig("a")
    for bad, detail in (
        (None, "invalid type: null, expected struct StateTriggerConfig"),
        ([], "invalid type: sequence, expected struct StateTriggerConfig"),
        ({"key": 5}, "invalid type: integer `5`, expected a string"),
        ({"condition_function_id": True}, "invalid type: boolean `true`, expected a string"),
    ):
        with pytest.raises(TriggerConfigError) as info:
            parse_trigger_config(bad)
        assert info.value.message == f"Failed to parse trigger config: {detail}"


def test_durable_name_is_stable_and_ignores_metadata() -> None:
    one = durable_name("f::x", StateTriggerConfig("orders", None, "f::only"))
    assert one == durable_name("f::x", StateTriggerConfig("orders", None, "f::only"))
    assert one.startswith("worker:f::x:") and len(one.rsplit(":", 1)[1]) == 16
    others = {
        durable_name("f::y", StateTriggerConfig("orders", None, "f::only")),
        durable_name("f::x", StateTriggerConfig("orders", None, None)),
        durable_name("f::x", StateTriggerConfig(None, "orders", "f::only")),
        durable_name("f::x", StateTriggerConfig()),
    }
    assert one not in others and len(others) == 4


def test_registrations_share_a_store_trigger() -> None:
    store, calls = FakeStore(), Calls({})
    triggers = WorkerTriggers(store, calls)
    a, b = object(), object()
    name = triggers.register(a, "t1", "f::on", {"scope": "s"}, {"m": 1})
    assert triggers.register(b, "t1", "f::on", {"scope": "s"}, {"m": 2}) == name
    assert store.registered[name]["scope"] == "s" and store.registered[name]["start"] == "latest"
    assert triggers.names() == {name: 2}
    triggers.drop_owner(b)
    assert triggers.names() == {name: 1} and not store.unregistered
    # the same id again replaces the earlier registration
    triggers.register(a, "t1", "f::on", {"scope": "s"}, {"m": 3})
    assert triggers.names() == {name: 1}
    triggers.unregister(a, "nope")  # unknown ids are not an error
    triggers.unregister(a, "t1")
    assert store.unregistered == [name] and triggers.names() == {}


def test_handler_condition_rules() -> None:
    store = FakeStore()
    for verdict, runs in ((False, False), (0, True), (None, True), ("", True), (True, True)):
        calls = Calls({"f::only": verdict})
        triggers = WorkerTriggers(store, calls)
        name = triggers.register(
            object(), "t", "f::on", {"condition_function_id": "f::only"}, {"m": 1}
        )
        store.registered[name]["handler"](FakeEvent())
        made = [c[0] for c in calls.made]
        assert made == (["f::only", "f::on"] if runs else ["f::only"]), verdict
        assert calls.made[0][2] is None  # the condition gets no metadata
        if runs:
            assert calls.made[1] == ("f::on", FakeEvent().to_iii(), {"m": 1})
        triggers.close()


def answered(result: Any) -> Any:
    """What a handler's answer resolves to (the store waits for a returned future)."""
    return result.result() if isinstance(result, concurrent.futures.Future) else result


def test_handler_errors() -> None:
    store = FakeStore()
    failing = Calls({"f::only": CallError("function_not_found", "gone")})
    triggers = WorkerTriggers(store, failing)
    name = triggers.register(object(), "t", "f::on", {"condition_function_id": "f::only"}, None)
    store.registered[name]["handler"](FakeEvent())  # a failed condition skips (iii)
    assert [c[0] for c in failing.made] == ["f::only"]
    triggers.close()
    stopped = Calls({"f::only": CallError("invocation_stopped", "Invocation stopped")})
    triggers = WorkerTriggers(store, stopped)
    name = triggers.register(object(), "t", "f::on", {"condition_function_id": "f::only"}, None)
    with pytest.raises(CallError):  # no answer is not a verdict: the delivery fails
        store.registered[name]["handler"](FakeEvent())
    triggers.close()
    target_fails = Calls({"f::on": CallError("invocation_failed", "kaboom")})
    triggers = WorkerTriggers(store, target_fails)
    name = triggers.register(object(), "t", "f::on", {}, None)
    with pytest.raises(CallError, match="kaboom"):  # the store retries, then parks
        answered(store.registered[name]["handler"](FakeEvent()))
    triggers.close()


def test_a_stopped_runner_reaches_no_worker() -> None:
    store, calls = FakeStore(), Calls({})
    triggers = WorkerTriggers(store, calls)
    owner = object()
    name = triggers.register(owner, "t", "f::on", {}, None)
    old_handler = store.registered[name]["handler"]
    triggers.drop_owner(owner)  # the worker went away...
    triggers.register(object(), "t", "f::on", {}, None)  # ...and came back
    with pytest.raises(CallError) as info:
        answered(old_handler(FakeEvent()))  # the old runner, still finishing, is refused
    assert info.value.code == "invocation_stopped"
    assert calls.made == []
