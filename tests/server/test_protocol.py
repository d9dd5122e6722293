"""The engine protocol frame by frame, with a raw WebSocket client (reference section 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.server.harness import Raw, Served, wait_until


def test_handshake_comes_first_and_announces_observe_only(
    server: Served, raw: Callable[..., Raw]
) -> None:
    client = raw(server.url)
    frame = client.registered
    assert set(frame) == {"type", "worker_id", "reattach_token", "features"}
    assert frame["features"] == ["observe.v1"]  # no local-dispatch.v1: every call is routed
    assert frame["worker_id"] != frame["reattach_token"]
    assert raw(server.url).worker_id != client.worker_id


def test_ping_pong_and_unknown_frames(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)
    client.send({"type": "ping"})
    assert client.recv() == {"type": "pong"}
    for frame in (
        {"type": "unobserve", "id": "never-observed"},
        {"type": "observerack", "function_id": "f", "id": "x", "revision": 1},
        {"type": "registerservice", "id": "svc"},
        {"type": "registertriggertype", "id": "custom", "description": "d"},
        {"type": "pong"},
    ):
        client.send(frame)
    client.nothing()
    assert client.call("state::get", {"scope": "s", "key": "k"})["type"] == "invocationresult"


def test_results_and_errors_have_the_engine_shape(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)
    assert client.call("state::set", {"scope": "s", "key": "k", "value": 1}) == {
        "type": "invocationresult",
        "invocation_id": "i1",
        "function_id": "state::set",
        "result": {"old_value": None, "new_value": 1},
    }
    # None: no `result` key at all
    assert client.call("state::get", {"scope": "s", "key": "nope"}) == {
        "type": "invocationresult",
        "invocation_id": "i1",
        "function_id": "state::get",
    }
    assert client.call("state::delete", {"scope": "s", "key": "nope"}) == {
        "type": "invocationresult",
        "invocation_id": "i1",
        "function_id": "state::delete",
    }
    assert client.call("nope::x", {}) == {
        "type": "invocationresult",
        "invocation_id": "i1",
        "function_id": "nope::x",
        "error": {
            "code": "function_not_found",
            "message": "Function nope::x not found in namespace default",
        },
    }
    # a missing `data` is read as null (the engine would drop the frame)
    answer = client.call("state::get", invocation_id="i2", data=None)
    assert answer["error"]["code"] == "deserialization_error"
    client.send(
        {"type": "invokefunction", "function_id": "state::list_groups", "invocation_id": "i3"}
    )
    missing = client.recv_type("invocationresult")
    assert missing["error"] == {
        "code": "deserialization_error",
        "message": "Failed to deserialize input for state::list_groups: "
        "invalid type: null, expected struct StateListGroupsInput",
    }


def test_void_and_fire_and_forget_calls_run_without_reply(
    server: Served, raw: Callable[..., Raw]
) -> None:
    client = raw(server.url)
    client.send(
        {
            "type": "invokefunction",
            "function_id": "state::set",
            "data": {"scope": "v", "key": "a", "value": 1},
            "action": {"type": "void"},
            "invocation_id": "ignored-for-void",
        }
    )
    client.send(
        {
            "type": "invokefunction",
            "function_id": "state::set",
            "data": {"scope": "v", "key": "b", "value": 2},
        }
    )
    client.send(
        {
            "type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": {"runtime": "raw", "name": "rawbie"},
            "action": {"type": "void"},
        }
    )
    client.nothing()
    wait_until(lambda: server.store.get("v", "b") == 2 and server.store.get("v", "a") == 1)
    assert client.call("engine::workers::register", {"name": "again"})["result"] == {
        "success": True
    }
    assert client.call("nope::void", {}, action={"type": "enqueue", "queue": "q"})["error"] == {
        "code": "enqueue_error",
        "message": "evstate serve has no queues: enqueue is not supported",
    }


def test_bad_frames_answered_when_they_name_an_invocation(
    server: Served, raw: Callable[..., Raw]
) -> None:
    client = raw(server.url)
    client.send('{"type": "invokefunction", "invocation_id": "broken-1", "function_id": ')
    answer = client.recv_type("invocationresult")
    assert answer["invocation_id"] == "broken-1"
    assert answer["error"]["code"] == "deserialization_error"
    assert answer["error"]["message"].startswith("Failed to decode message")
    client.send(
        {"type": "invokefunction", "invocation_id": "typed-1", "function_id": 123, "data": {}}
    )
    typed = client.recv_type("invocationresult")
    assert typed["invocation_id"] == "typed-1"
    assert "invalid type: integer `123`" in typed["error"]["message"]
    client.send(
        {
            "type": "invokefunction",
            "invocation_id": "act-1",
            "function_id": "state::get",
            "data": {},
            "action": {"type": "teleport"},
        }
    )
    assert client.recv_type("invocationresult")["error"]["code"] == "deserialization_error"
    # no invocation id to answer: logged, nothing sent, the connection stays
    for garbage in (
        "not json",
        "[1, 2]",
        "42",
        '{"no": "type"}',
        '{"type": 7}',
        "NaN",
        '{"type": "invokefunction", "invocation_id": 5, "function_id": "x"}',
        '{"type": "registerfunction", "id": ""}',
        '{"type": "unregistertrigger"}',
        '{"type": "invocationresult"}',
        b"\xff\xfe binary junk",
    ):
        client.send(garbage)
    client.nothing()
    # binary frames carrying JSON are accepted, as by the engine
    client.send(
        json.dumps(
            {
                "type": "invokefunction",
                "function_id": "state::list_groups",
                "data": {},
                "invocation_id": "bin-1",
            }
        ).encode()
    )
    assert client.recv_type("invocationresult")["result"] == {"groups": []}


def test_function_registration_rules(server: Served, raw: Callable[..., Raw]) -> None:
    a, b = raw(server.url), raw(server.url)
    a.send({"type": "registerfunction", "id": "shared::fn"})
    a.send({"type": "registerfunction", "id": "shared::fn", "description": "again"})  # idempotent
    a.nothing(0.1)
    b.send({"type": "registerfunction", "id": "shared::fn"})
    assert b.recv() == {
        "type": "registrationrejected",
        "code": "FUNCTION_NAMESPACE_CONFLICT",
        "namespace": "default",
        "function_id": "shared::fn",
        "owner_worker_id": a.worker_id,
    }
    b.send({"type": "registerfunction", "id": "state::set"})
    assert b.recv()["owner_worker_id"] == "evstate"
    a.send({"type": "unregisterfunction", "id": "shared::fn"})
    # frames of two connections have no order between them: wait for a's to apply
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("shared::fn")) is None)
    b.send({"type": "registerfunction", "id": "shared::fn"})
    b.nothing(0.1)
    assert server.on_loop(lambda: server.hub.router.owner("shared::fn")).worker_id == b.worker_id


def test_relay_between_workers(server: Served, raw: Callable[..., Raw]) -> None:
    owner, caller = raw(server.url), raw(server.url)
    owner.send({"type": "registerfunction", "id": "calc::double"})
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("calc::double")))
    caller.send(
        {
            "type": "invokefunction",
            "function_id": "calc::double",
            "invocation_id": "c1",
            "data": {"x": 21},
            "metadata": {"m": True},
            "traceparent": "00-abc-def-01",
        }
    )
    sent = owner.recv_type("invokefunction")
    assert sent["invocation_id"] != "c1"
    assert sent["data"] == {"x": 21, "_caller_worker_id": caller.worker_id}
    assert sent["metadata"] == {"m": True} and sent["traceparent"] == "00-abc-def-01"
    # a result from a connection that was not asked is ignored
    caller.send(
        {
            "type": "invocationresult",
            "invocation_id": sent["invocation_id"],
            "function_id": "calc::double",
            "result": "forged",
        }
    )
    owner.send(
        {
            "type": "invocationresult",
            "invocation_id": sent["invocation_id"],
            "function_id": "calc::double",
            "result": 42,
        }
    )
    assert caller.recv_type("invocationresult") == {
        "type": "invocationresult",
        "invocation_id": "c1",
        "function_id": "calc::double",
        "result": 42,
    }
    # errors travel back as the worker sent them (stacktrace included)
    caller.send(
        {"type": "invokefunction", "function_id": "calc::double", "invocation_id": "c2", "data": 5}
    )
    sent = owner.recv_type("invokefunction")
    assert sent["data"] == 5  # only object payloads get the caller id
    error = {"code": "invocation_failed", "message": "bad", "stacktrace": "Traceback ..."}
    owner.send(
        {
            "type": "invocationresult",
            "invocation_id": sent["invocation_id"],
            "function_id": "calc::double",
            "error": error,
        }
    )
    assert caller.recv_type("invocationresult")["error"] == error
    # void calls are forwarded without an invocation id
    caller.send(
        {
            "type": "invokefunction",
            "function_id": "calc::double",
            "data": {},
            "action": {"type": "void"},
        }
    )
    assert "invocation_id" not in owner.recv_type("invokefunction")


def test_owner_disconnect_mid_call(server: Served, raw: Callable[..., Raw]) -> None:
    owner, caller = raw(server.url), raw(server.url)
    owner.send({"type": "registerfunction", "id": "gone::fn"})
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("gone::fn")))
    caller.send(
        {"type": "invokefunction", "function_id": "gone::fn", "invocation_id": "g1", "data": {}}
    )
    owner.recv_type("invokefunction")
    owner.close()
    assert caller.recv_type("invocationresult")["error"] == {
        "code": "invocation_stopped",
        "message": "Invocation stopped",
    }
    assert caller.call("gone::fn", {}, invocation_id="g2")["error"]["code"] == "function_not_found"


def test_trigger_registration_frames(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)

    def register(**fields: Any) -> None:
        client.send(
            {
                "type": "registertrigger",
                "id": fields.pop("id", "t"),
                "trigger_type": "state",
                "function_id": "w::on",
                **fields,
            }
        )

    register(id="bad-scope", config={"scope": 123})
    assert client.recv() == {
        "type": "triggerregistrationresult",
        "id": "bad-scope",
        "trigger_type": "state",
        "function_id": "w::on",
        "error": {
            "code": "trigger_registration_failed",
            "message": "Failed to parse trigger config: invalid type: integer `123`, "
            "expected a string",
        },
    }
    register(id="null-config", config=None)
    assert "expected struct StateTriggerConfig" in client.recv()["error"]["message"]
    register(id="other-type", trigger_type="cron", config={})
    assert client.recv()["error"]["code"] == "trigger_registration_failed"
    register(id="no-function", function_id="", config={})
    assert client.recv()["error"]["code"] == "trigger_registration_failed"
    register(id="ok", config={"scope": "a", "unknown": "ignored"})
    register(id="no-config")  # lenient: a missing config is {} (every write)
    client.nothing()
    assert sorted(server.trigger_names().values()) == [1, 1]
    client.send({"type": "unregistertrigger", "id": "ok", "trigger_type": "state"})
    client.send({"type": "unregistertrigger", "id": "never-registered"})
    client.nothing(0.1)
    assert len(server.trigger_names()) == 1


def test_trigger_delivery_frame(server: Served, raw: Callable[..., Raw]) -> None:
    worker = raw(server.url)
    worker.send({"type": "registerfunction", "id": "w::on"})
    worker.send(
        {
            "type": "registertrigger",
            "id": "t1",
            "trigger_type": "state",
            "function_id": "w::on",
            "config": {"scope": "s"},
            "metadata": {"k": [1]},
        }
    )
    wait_until(server.trigger_names)
    server.store.set("s", "a", {"v": 1})
    server.store.set("s", "a", {"v": 2})
    first = worker.recv_type("invokefunction")
    assert first == {
        "type": "invokefunction",
        "invocation_id": first["invocation_id"],
        "function_id": "w::on",
        "data": {
            "type": "state",
            "event_type": "state:created",
            "scope": "s",
            "key": "a",
            "old_value": None,
            "new_value": {"v": 1},
        },
        "metadata": {"k": [1]},
    }
    worker.nothing(0.2)  # one at a time: the next waits for this answer
    worker.send(
        {
            "type": "invocationresult",
            "invocation_id": first["invocation_id"],
            "function_id": "w::on",
            "result": None,
        }
    )
    second = worker.recv_type("invokefunction")
    assert second["data"]["event_type"] == "state:updated"
    worker.send(
        {
            "type": "invocationresult",
            "invocation_id": second["invocation_id"],
            "function_id": "w::on",
        }
    )
    server.store.wait_for_triggers(timeout=5)


def test_identical_triggers_share_one_cursor(server: Served, raw: Callable[..., Raw]) -> None:
    owner, other = raw(server.url), raw(server.url)
    owner.send({"type": "registerfunction", "id": "w::on"})
    for client, trigger_id in ((owner, "a"), (other, "b"), (owner, "c")):
        client.send(
            {
                "type": "registertrigger",
                "id": trigger_id,
                "trigger_type": "state",
                "function_id": "w::on",
                "config": {"scope": "s"},
            }
        )
    wait_until(lambda: list(server.trigger_names().values()) == [3])
    server.store.set("s", "k", 1)
    sent = owner.recv_type("invokefunction")
    owner.send(
        {"type": "invocationresult", "invocation_id": sent["invocation_id"], "function_id": "w::on"}
    )
    server.store.wait_for_triggers(timeout=5)
    owner.nothing(0.2)  # delivered once, not once per registration
    other.close()
    wait_until(lambda: list(server.trigger_names().values()) == [2])


def test_reattach_retires_the_previous_connection(server: Served, raw: Callable[..., Raw]) -> None:
    old = raw(server.url)
    old.send({"type": "registerfunction", "id": "re::fn"})
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("re::fn")))
    intruder = raw(server.url)
    intruder.send(
        {"type": "reattach", "previous_worker_id": old.worker_id, "reattach_token": "wrong"}
    )
    intruder.send({"type": "registerfunction", "id": "re::fn"})
    assert intruder.recv()["code"] == "FUNCTION_NAMESPACE_CONFLICT"
    new = raw(server.url)
    new.send(
        {
            "type": "reattach",
            "previous_worker_id": old.worker_id,
            "reattach_token": old.registered["reattach_token"],
        }
    )
    new.send({"type": "registerfunction", "id": "re::fn"})
    new.nothing(0.2)
    assert server.on_loop(lambda: server.hub.router.owner("re::fn")).worker_id == new.worker_id
    with pytest.raises(ConnectionClosed):  # the server closed the replaced connection
        old.recv(timeout=5)


def test_flat_namespace(server: Served, raw: Callable[..., Raw]) -> None:
    # evstate has one namespace: a worker's namespace does not hide the state functions
    client = raw(server.url)
    answer = client.call("state::list_groups", {}, namespace="team-a")
    assert answer["result"] == {"groups": []}


def test_otel_is_accepted_and_drained(server: Served) -> None:
    with connect(server.url + "/otel", open_timeout=5, compression=None) as otel:
        otel.send(b'OTLP{"resourceSpans": []}')
        otel.send(b'LOGS{"resourceLogs": []}')
        otel.send(b'MTRC{"resourceMetrics": []}')
        with pytest.raises(TimeoutError):
            otel.recv(timeout=0.2)


def test_other_paths_are_not_found(server: Served) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(server.url + "/ws/channels/abc", open_timeout=5).close()
    assert info.value.response.status_code == 404
