"""The observe frames on the wire, with a raw WebSocket client: their exact shapes, and
hostile ``observe`` / ``unobserve`` frames (each answered, the connection left usable)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.harness import Raw, Served, wait_until


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def observe(client: Raw, observer_id: Any, **fields: Any) -> None:
    client.send({"type": "observe", "id": observer_id, **fields})


def state_set(scope: str = "s", key: str = "k", value: Any = 1) -> dict[str, Any]:
    return {"scope": scope, "key": key, "value": value}


def test_observe_answer_activation_and_state_change_frames(
    server: Served, raw: Callable[..., Raw]
) -> None:
    watcher, writer = raw(server.url), raw(server.url)
    watcher.send({"type": "registerfunction", "id": "t::seen"})
    observe(
        watcher,
        "o1",
        source={"function_id": "state::set", "filters": {"input.scope": {"$eq": "s"}}},
        target={"function_id": "t::seen"},
        metadata={"m": 1},
        max_fires=1,
    )
    assert watcher.recv() == {"type": "observeresult", "id": "o1", "state": "active"}

    # the caller's asserted worker is replaced by the connection's own, as the engine does
    caller = {"function_id": "b::fn", "invocation_id": "inv-b", "worker_id": "spoofed"}
    answer = writer.call("state::set", state_set(), caller=caller, observe_depth=2)
    assert answer["result"] == {"old_value": None, "new_value": 1}

    activation = watcher.recv_type("invokefunction")
    envelope = activation.pop("data")
    assert set(activation) == {
        "type",
        "function_id",
        "invocation_id",
        "metadata",
        "activation",
        "observe_depth",
    }
    assert activation["function_id"] == "t::seen"
    assert activation["metadata"] == {"m": 1}
    assert activation["observe_depth"] == 3
    assert activation["activation"] == {
        "observer_id": "o1",
        "activation_id": envelope["activation_id"],
    }
    assert envelope["invocation_id"] == "i1"  # the caller's id for its call
    assert envelope["caller"] == {
        "function_id": "b::fn",
        "invocation_id": "inv-b",
        "worker_id": writer.worker_id,
    }
    assert envelope["input"] == state_set()
    watcher.send(
        {
            "type": "invocationresult",
            "invocation_id": activation["invocation_id"],
            "function_id": "t::seen",
        }
    )
    changed = watcher.recv_type("observerstatechanged")
    assert changed == {
        "type": "observerstatechanged",
        "id": "o1",
        "state": "disposed",
        "fires": 1,
        "reason": {"code": "MAX_FIRES_REACHED", "message": "fired 1 times (max_fires)"},
    }
    writer.call("state::set", state_set(value=2), invocation_id="i2")
    watcher.nothing()


def test_pending_until_the_target_registers_and_void_calls_are_observed(
    server: Served, raw: Callable[..., Raw]
) -> None:
    watcher, writer = raw(server.url), raw(server.url)
    observe(watcher, "o1", source={"function_id": "state::set"}, target={"function_id": "t::x"})
    pending = watcher.recv()
    assert pending["state"] == "pending"
    assert pending["warnings"] == ["target t::x is not registered by any worker"]
    watcher.send({"type": "registerfunction", "id": "t::x"})
    assert watcher.recv() == {
        "type": "observerstatechanged",
        "id": "o1",
        "state": "active",
        "fires": 0,
    }
    writer.send(
        {
            "type": "invokefunction",
            "function_id": "state::set",
            "data": state_set(),
            "action": {"type": "void"},
        }
    )
    activation = watcher.recv_type("invokefunction")
    assert activation["data"]["output"] == {"old_value": None, "new_value": 1}
    watcher.send({"type": "unregisterfunction", "id": "t::x"})
    suspended = watcher.recv_type("observerstatechanged")
    assert suspended["state"] == "suspended"
    assert suspended["reason"]["code"] == "TARGET_UNAVAILABLE"


def test_relayed_calls_carry_their_observe_depth(server: Served, raw: Callable[..., Raw]) -> None:
    owner, caller = raw(server.url), raw(server.url)
    owner.send({"type": "registerfunction", "id": "w::fn"})
    owner.nothing(0.1)
    caller.send(
        {
            "type": "invokefunction",
            "function_id": "w::fn",
            "data": {},
            "invocation_id": "c1",
            "observe_depth": 3,
        }
    )
    relayed = owner.recv_type("invokefunction")
    assert relayed["observe_depth"] == 3
    caller.send({"type": "invokefunction", "function_id": "w::fn", "data": {}})  # void
    assert owner.recv_type("invokefunction")["function_id"] == "w::fn"
    caller.send({"type": "invokefunction", "function_id": "w::fn", "data": {}, "observe_depth": 2})
    assert owner.recv_type("invokefunction")["observe_depth"] == 2


def test_a_replay_is_answered_and_a_new_definition_replaces(
    server: Served, raw: Callable[..., Raw]
) -> None:
    client = raw(server.url)
    client.send({"type": "registerfunction", "id": "t::seen"})
    frame = {"source": {"function_id": "state::set"}, "target": {"function_id": "t::seen"}}
    observe(client, "o1", **frame, max_fires=2)
    assert client.recv()["state"] == "active"
    client.call("state::set", state_set())
    client.recv_type("invokefunction")
    observe(client, "o1", **frame, max_fires=2)  # replayed: fires kept
    assert client.recv() == {"type": "observeresult", "id": "o1", "state": "active"}
    client.call("state::set", state_set(), invocation_id="i2")
    client.recv_type("invokefunction")
    assert client.recv_type("observerstatechanged")["state"] == "disposed"
    observe(client, "o2", **frame, max_fires=1)
    client.recv()
    observe(client, "o2", **frame, max_fires=1, metadata={"v": 2})  # redefined: a new one
    assert client.recv()["state"] == "active"
    assert server.on_loop(server.hub.router.observers.watched) == {"state::set": 1}


def test_an_observer_frame_flood_is_bounded(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)
    source, target = {"function_id": "state::set"}, {"function_id": "t::none"}
    for i in range(4097):
        observe(client, f"o{i}", source=source, target=target)
    answers = [client.recv() for _ in range(4097)]
    assert {a["state"] for a in answers[:4096]} == {"pending"}
    assert answers[4096]["state"] == "error"
    assert answers[4096]["error"]["code"] == "TOO_MANY_OBSERVERS"
    conn = server.on_loop(lambda: _conn(server))
    observers = server.hub.router.observers
    assert len(server.on_loop(lambda: observers.observer_ids(conn))) == 4096
    client.close()
    wait_until(lambda: server.on_loop(lambda: observers.observer_ids(conn)) == {})


SOURCE = {"function_id": "state::set"}
TARGET = {"function_id": "t::seen"}

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({}, "INVALID_OBSERVER"),
    ({"source": "state::set", "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {"function_id": 7}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {"function_id": "  "}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": SOURCE}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": {"function_id": None}}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "namespace": 5}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "args": []}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "capture": "input"}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "capture": [1]}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "on": 5}, "target": TARGET}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": TARGET, "max_fires": "3"}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": TARGET, "max_fires": True}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": TARGET, "max_fires": 2**60}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": TARGET, "expires_in_ms": 1.5}, "INVALID_OBSERVER"),
    ({"source": SOURCE, "target": TARGET, "max_in_flight": 0}, "INVALID_OBSERVER"),
    ({"source": {**SOURCE, "filters": []}, "target": TARGET}, "INVALID_FILTER"),
    ({"source": {**SOURCE, "filters": "input.a"}, "target": TARGET}, "INVALID_FILTER"),
    ({"source": {**SOURCE, "deliver": "output"}, "target": TARGET}, "UNSUPPORTED"),
    ({"source": {**SOURCE, "args": {"a": 1}}, "target": TARGET}, "INVALID_ARGS"),
]


def test_hostile_observe_and_unobserve_frames(
    server: Served, raw: Callable[..., Raw], caplog: pytest.LogCaptureFixture
) -> None:
    client = raw(server.url)
    client.send({"type": "registerfunction", "id": "t::seen"})
    for i, (fields, code) in enumerate(REFUSED):
        observe(client, f"bad-{i}", **fields)
        answer = client.recv()
        assert answer["type"] == "observeresult", fields
        assert answer["id"] == f"bad-{i}"
        assert answer["state"] == "error"
        assert answer["error"]["code"] == code, (fields, answer)
        assert answer["error"]["message"]
    deep: Any = {"input.a": {"$eq": 1}}
    for _ in range(200):
        deep = {"$and": [deep]}
    observe(client, "deep", source={**SOURCE, "filters": deep}, target=TARGET)
    assert client.recv()["error"]["code"] == "INVALID_FILTER"
    for frame in (
        {"type": "observe"},
        {"type": "observe", "id": 5, "source": SOURCE, "target": TARGET},
        {"type": "observe", "id": "", "source": SOURCE, "target": TARGET},
        {"type": "observe", "id": "x" * 2000, "source": SOURCE, "target": TARGET},
        {"type": "unobserve"},
        {"type": "unobserve", "id": ["o1"]},
    ):
        client.send(frame)
        answer = client.recv()
        assert answer["type"] == "error", frame
        assert answer["error"]["code"] == "INVALID_OBSERVER"
    client.send({"type": "unobserve", "id": "never-observed"})
    client.send('{"type": "observe", "id": "broken", "source": ')  # not JSON: logged only
    client.nothing()
    observers = server.hub.router.observers
    assert server.on_loop(lambda: observers.observer_ids(_conn(server))) == {}
    answer = client.call("state::get", {"scope": "s", "key": "k"}, invocation_id="after")
    assert answer["type"] == "invocationresult"
    _no_tracebacks(caplog)


def _conn(server: Served) -> Any:
    (conn,) = server.hub.connections.values()
    return conn


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**60) | st.text(max_size=5) | st.floats(-1, 1),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
sources = st.fixed_dictionaries(
    {},
    optional={
        "function_id": st.sampled_from(["state::set", "t::seen", "engine::x", ""]) | json_values,
        "filters": json_values,
        "capture": st.lists(st.sampled_from(["input", "output", "caller", "x"])) | json_values,
        "on": st.sampled_from(["success", "error", "complete", "x"]) | json_values,
        "deliver": st.sampled_from(["envelope", "input"]) | json_values,
        "args": json_values,
    },
)
observe_frames = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=8)},
    optional={
        "source": sources | json_values,
        "target": st.fixed_dictionaries({"function_id": st.sampled_from(["t::seen", "state::set"])})
        | json_values,
        "metadata": json_values,
        "max_fires": json_values,
        "expires_in_ms": st.integers(1, 10**6) | json_values,
        "max_in_flight": json_values,
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(observe_frames, min_size=1, max_size=4))
def test_fuzzed_observe_frames_are_each_answered(
    server: Served, raw: Callable[..., Raw], frames: list[dict[str, Any]]
) -> None:
    client = raw(server.url)
    client.send({"type": "registerfunction", "id": "t::seen"})
    for frame in frames:
        client.send(json.dumps({"type": "observe", **frame}))
        answer = client.recv()
        assert answer["type"] == "observeresult"
        assert answer["id"] == frame["id"]
        assert answer["state"] in ("active", "pending", "error")
        client.send({"type": "unobserve", "id": frame["id"]})
    assert client.call("state::get", {"scope": "s", "key": "k"})["type"] == "invocationresult"
    client.close()
