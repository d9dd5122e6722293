"""State triggers and worker-to-worker calls with the real Python iii SDK (iii-sdk 0.25.0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from iii import InvocationError

import evstate
from evstate.server.app import BackgroundServer
from tests.server.harness import (
    Raw,
    Served,
    WorkerProcess,
    register_state_trigger,
    shutdown,
    wait_until,
)


class Recorder:
    """A trigger handler that records (event, metadata), optionally slowly."""

    def __init__(self, delay: float = 0.0) -> None:
        self.seen: list[tuple[dict[str, Any], Any]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], metadata: Any = None) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.seen.append((event, metadata))

    def values(self) -> list[Any]:
        with self.lock:
            return [event["new_value"] for event, _ in self.seen]


def set_(worker: Any, scope: str, key: str, value: Any) -> Any:
    return worker.trigger(
        {"function_id": "state::set", "payload": {"scope": scope, "key": key, "value": value}}
    )


def wait_registered(served: Served, count: int = 1) -> dict[str, int]:
    return wait_until(
        lambda: (names := served.trigger_names()) and len(names) >= count and names,
        what="trigger registration",
    )


def test_trigger_with_scope_key_and_metadata(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Recorder()
    w.register_function("orders::on-change", seen)
    register_state_trigger(w, "orders::on-change", scope="orders", key="o1", metadata={"v": 1})
    wait_registered(server)
    set_(w, "orders", "o1", {"status": "new"})
    set_(w, "orders", "o2", {"status": "other key"})
    set_(w, "archive", "o1", {"status": "other scope"})
    w.trigger(
        {
            "function_id": "state::update",
            "payload": {
                "scope": "orders",
                "key": "o1",
                "ops": [{"type": "set", "path": "status", "value": "paid"}],
            },
        }
    )
    w.trigger({"function_id": "state::delete", "payload": {"scope": "orders", "key": "o1"}})
    wait_until(lambda: len(seen.seen) == 3, what="three events")
    assert seen.seen == [
        (
            {
                "type": "state",
                "event_type": "state:created",
                "scope": "orders",
                "key": "o1",
                "old_value": None,
                "new_value": {"status": "new"},
            },
            {"v": 1},
        ),
        (
            {
                "type": "state",
                "event_type": "state:updated",
                "scope": "orders",
                "key": "o1",
                "old_value": {"status": "new"},
                "new_value": {"status": "paid"},
            },
            {"v": 1},
        ),
        (
            {
                "type": "state",
                "event_type": "state:deleted",
                "scope": "orders",
                "key": "o1",
                "old_value": {"status": "paid"},
                "new_value": None,
            },
            {"v": 1},
        ),
    ]
    server.store.wait_for_triggers(timeout=5)
    time.sleep(0.1)
    assert len(seen.seen) == 3


def test_only_exactly_false_skips(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Recorder()
    conditions: list[Any] = []

    def condition(event: dict[str, Any]) -> Any:
        conditions.append(event)
        verdict = event["new_value"]["verdict"]
        if verdict == "raise":
            raise ValueError("condition failed")
        return verdict

    w.register_function("c::on", seen)
    w.register_function("c::only", condition)
    register_state_trigger(w, "c::on", scope="c", condition_function_id="c::only")
    wait_registered(server)
    verdicts: list[Any] = [True, False, 0, None, "", [], {}, "false", "raise", 1]
    for i, verdict in enumerate(verdicts):
        set_(w, "c", "k", {"i": i, "verdict": verdict})
    server.store.wait_for_triggers(timeout=10)
    # False skips; so does a condition that fails (iii's rule); everything else runs
    assert [v["i"] for v in seen.values()] == [0, 2, 3, 4, 5, 6, 7, 9]
    assert len(conditions) == len(verdicts)
    # the condition receives the iii event, without metadata
    assert conditions[0]["type"] == "state" and conditions[0]["event_type"] == "state:created"


def test_function_registered_by_one_worker_called_by_another(
    server: Served, workers: Callable[..., Any]
) -> None:
    a = workers(server.url, name="worker-a")
    b = workers(server.url, name="worker-b")
    callers: list[Any] = []

    def add(data: dict[str, Any]) -> dict[str, Any]:
        callers.append(data.get("_caller_worker_id"))
        return {"sum": data["a"] + data["b"]}

    def boom(data: Any) -> None:
        raise ValueError("kaboom")

    a.register_function("math::add", add)
    a.register_function("math::boom", boom)
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("math::boom")))
    assert b.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}) == {"sum": 5}
    assert callers == [b.worker_id]  # the engine injects the caller's worker id
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "math::boom", "payload": {}})
    assert info.value.code == "invocation_failed"
    assert info.value.message == "kaboom"
    # a second worker may not take a function id another live worker owns
    b.register_function("math::add", lambda data: {"sum": "stolen"})
    time.sleep(0.2)
    assert b.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1}}) == {"sum": 2}
    # once the owner is gone, the id is free again
    shutdown(a)
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("math::add")) is None)
    with pytest.raises(InvocationError) as gone:
        b.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1}})
    assert gone.value.code == "function_not_found"


def test_owner_leaving_mid_call_stops_the_invocation(
    server: Served, workers: Callable[..., Any], raw: Callable[..., Raw]
) -> None:
    owner = raw(server.url)  # a worker that takes the call and then goes away
    owner.send({"type": "registerfunction", "id": "slow::op"})
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("slow::op")))
    b = workers(server.url, name="caller")
    outcome: list[Any] = []
    caller = threading.Thread(
        target=lambda: outcome.append(_capture(b, {"function_id": "slow::op", "payload": {}}))
    )
    caller.start()
    invocation = owner.recv_type("invokefunction")
    assert invocation["data"]["_caller_worker_id"] == b.worker_id
    owner.close()
    caller.join(10)
    assert isinstance(outcome[0], InvocationError)
    assert outcome[0].code == "invocation_stopped"
    assert outcome[0].message == "Invocation stopped"


def _capture(worker: Any, request: dict[str, Any]) -> Any:
    try:
        return worker.trigger(request)
    except InvocationError as exc:
        return exc


PROJECTOR = str(Path(__file__).parent / "workers" / "projector.py")


def test_worker_killed_mid_backlog_gets_what_it_missed_in_order_after_restart(
    make_server: Callable[..., Served],
) -> None:
    served = make_server(file=True)
    first = WorkerProcess(PROJECTOR, served.url, "jobs::project", "jobs", "0.02")
    try:
        wait_registered(served)
        for i in range(1, 31):
            served.store.set("jobs", f"j{i % 3}", i)
        wait_until(lambda: len(first.values()) >= 5, what="the first deliveries")
    finally:
        first.kill()  # mid-backlog, a handler call in flight: a crash, no close frame
    wait_until(lambda: not served.trigger_names(), what="the disconnect")
    for i in range(31, 41):  # written while no worker is connected
        served.store.set("jobs", f"j{i % 3}", i)
    second = WorkerProcess(PROJECTOR, served.url, "jobs::project", "jobs", "0")
    try:
        wait_until(lambda: second.values()[-1:] == [40], what="the backlog")
    finally:
        second.kill()
    first_values, second_values = first.values(), second.values()
    # in order, nothing lost; at most the event in flight at the crash comes twice
    assert first_values == list(range(1, len(first_values) + 1))
    assert len(first_values) < 30  # it really was mid-backlog
    start = second_values[0]
    assert start in (len(first_values), len(first_values) + 1)
    assert second_values == list(range(start, 41))
    status = next(iter(served.store.trigger_status().values()))
    assert status["cursor"] == served.store.revision


def test_server_restart_keeps_the_cursor(tmp_path: Path, workers: Callable[..., Any]) -> None:
    path = tmp_path / "store"
    store = evstate.open(path)
    background = BackgroundServer(store).start()
    port = background.server.port
    try:
        w = workers(background.url, name="durable")
        seen = Recorder()
        w.register_function("d::on", seen)
        register_state_trigger(w, "d::on", scope="d")
        wait_until(lambda: background.server.hub.triggers.names(), what="registration")
        set_(w, "d", "k", 1)
        wait_until(lambda: seen.values() == [1])
        # The worker ran the handler; wait for its answer to advance the cursor too (a
        # stop before that delivers event 1 again: at-least-once).
        store.wait_for_triggers(timeout=5)
    finally:
        background.stop(grace=2.0)
        store.close()
    # written while the server is down: the worker must still get them, in order
    with evstate.open(path) as offline:
        offline.set("d", "k", 2)
        offline.set("d", "k", 3)
    store = evstate.open(path)
    background = BackgroundServer(store, port=port).start()
    try:
        wait_until(lambda: seen.values() == [1, 2, 3], what="the missed events")
        set_(w, "d", "k", 4)
        wait_until(lambda: seen.values() == [1, 2, 3, 4])
    finally:
        background.stop(grace=2.0)
        store.close()


def test_reconnect_replays_the_registration_and_resumes(
    server: Served, workers: Callable[..., Any]
) -> None:
    w = workers(server.url)
    seen = Recorder()
    w.register_function("r::on", seen)
    register_state_trigger(w, "r::on", scope="r")
    wait_registered(server)
    server.store.set("r", "k", 1)
    server.store.wait_for_triggers(timeout=5)  # else event 1 may come again (at-least-once)
    old_id = w.worker_id
    # drop the connection abruptly; events keep coming while the worker is away
    server.on_loop(lambda: [c.ws.transport.abort() for c in server.hub.connections.values()])
    server.store.set("r", "k", 2)
    server.store.set("r", "k", 3)
    wait_until(lambda: seen.values() == [1, 2, 3], what="redelivery after reconnect")
    assert w.worker_id != old_id
    assert len(server.hub.connections) == 1


def test_unregister_and_register_again_resumes_from_the_cursor(
    server: Served, workers: Callable[..., Any]
) -> None:
    w = workers(server.url)
    seen = Recorder()
    w.register_function("u::on", seen)
    trigger = register_state_trigger(w, "u::on", scope="u", metadata={"m": 1})
    wait_registered(server)
    server.store.set("u", "k", 1)
    server.store.wait_for_triggers(timeout=5)  # else event 1 may come again (at-least-once)
    trigger.unregister()
    wait_until(lambda: not server.trigger_names(), what="unregistration")
    server.store.set("u", "k", 2)
    register_state_trigger(w, "u::on", scope="u", metadata={"m": 2})
    wait_until(lambda: seen.values() == [1, 2], what="the event written meanwhile")
    assert seen.seen[-1][1] == {"m": 2}  # the newest registration's metadata


def test_failing_handler_is_retried_then_parked(
    server: Served, workers: Callable[..., Any]
) -> None:
    w = workers(server.url)
    attempts: list[int] = []
    done: list[int] = []

    def handler(event: dict[str, Any]) -> None:
        if event["new_value"] == 2:
            attempts.append(2)
            raise RuntimeError("cannot handle 2")
        done.append(event["new_value"])

    w.register_function("p::on", handler)
    register_state_trigger(w, "p::on", scope="p")
    (name,) = wait_registered(server)
    for i in (1, 2, 3):
        server.store.set("p", "k", i)
    server.store.wait_for_triggers(timeout=10)
    assert done == [1, 3]
    assert len(attempts) == 5  # the store's retries, then the dead letter
    (parked,) = server.store.parked_events(name)
    assert parked["event"]["new_value"] == 2
    assert "invocation_failed" in parked["error"] and "cannot handle 2" in parked["error"]


def test_registration_errors(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    w.register_function("e::on", Recorder())
    register_state_trigger(w, "e::on", scope=123)  # refused: logged by the SDK
    register_state_trigger(w, "e::on", key="fine")
    wait_registered(server)
    time.sleep(0.1)
    assert len(server.trigger_names()) == 1
