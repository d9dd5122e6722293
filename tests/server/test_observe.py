"""``iii.observe`` against ``evstate serve``, with the real Python iii SDK (iii-sdk 0.25.0).

Observers on the built-in state functions and on worker functions, their filters, capture,
``on``, ``max_fires``, ``expires_in_ms``, ``max_in_flight``, metadata and state changes, and
the refusals ``ready()`` must raise. The filter language itself is tested in
tests/server/test_observe_filter.py; the frames byte by byte in
tests/server/test_observe_frames.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from iii import InvocationError, ObserveHooks, ObserveRejection

from tests.server.harness import WAIT, Served, shutdown, wait_until

MAX_OBSERVE_DEPTH = 16  # evstate.server.observe.MAX_OBSERVE_DEPTH, as documented


class Seen:
    """A target handler that records (envelope, metadata); optionally blocks on a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        self.gate = gate
        self.running = 0
        self.most_running = 0

    def __call__(self, envelope: dict[str, Any], metadata: Any = None) -> None:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        if self.gate is not None:
            self.gate.wait(WAIT)
        with self.lock:
            self.running -= 1
            self.calls.append((envelope, metadata))

    def envelopes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [envelope for envelope, _ in self.calls]

    def inputs(self) -> list[Any]:
        return [envelope.get("input") for envelope in self.envelopes()]


def set_(worker: Any, scope: str, key: str, value: Any) -> Any:
    payload = {"scope": scope, "key": key, "value": value}
    return worker.trigger({"function_id": "state::set", "payload": payload})


def observed_sources(server: Served) -> dict[str, int]:
    return dict(server.on_loop(server.hub.router.observers.watched))


def settle(server: Served) -> None:
    """Give activations in flight time to land (checked with bounded waits elsewhere)."""
    time.sleep(0.2)


# ---- state functions ------------------------------------------------------------------------


def test_an_observer_on_state_set_sees_sets_of_another_worker(
    server: Served, workers: Callable[..., Any]
) -> None:
    watcher = workers(server.url, name="watcher")
    writer = workers(server.url, name="writer")
    seen = Seen()
    watcher.register_function("audit::on-set", seen)
    handle = watcher.observe(
        {"function_id": "state::set", "filters": {"input.scope": {"$eq": "orders"}}},
        "audit::on-set",
        {"metadata": {"source": "test"}},
    )
    handle.ready(timeout=WAIT)
    assert handle.state == "active"
    assert observed_sources(server) == {"state::set": 1}

    set_(writer, "orders", "o1", {"status": "new"})
    set_(writer, "archive", "o1", {"status": "other scope"})  # the filter refuses it
    set_(writer, "orders", "o2", {"status": "paid"})
    wait_until(lambda: len(seen.calls) == 2, what="two activations")
    settle(server)
    first, second = seen.envelopes()
    assert first["input"] == {"scope": "orders", "key": "o1", "value": {"status": "new"}}
    assert first["output"] == {"old_value": None, "new_value": {"status": "new"}}
    assert second["input"]["key"] == "o2"
    # the default capture: input, output, caller; the caller is the writer's connection
    assert set(first) == {
        "observer_id",
        "activation_id",
        "function_id",
        "namespace",
        "invocation_id",
        "status",
        "input",
        "output",
        "caller",
        "started_at_ms",
        "duration_ms",
    }
    assert first["caller"] == {"worker_id": writer.worker_id, "worker_name": "writer"}
    assert first["observer_id"] == handle.id
    assert first["function_id"] == "state::set"
    assert first["namespace"] == "default"
    assert first["status"] == "success"
    assert first["activation_id"] != second["activation_id"]
    assert abs(first["started_at_ms"] - time.time() * 1000) < 60_000
    assert first["duration_ms"] >= 0
    # the observer's metadata is the activation's metadata
    assert [metadata for _, metadata in seen.calls] == [{"source": "test"}] * 2


def test_update_delete_get_and_filters_on_output(
    server: Served, workers: Callable[..., Any]
) -> None:
    w = workers(server.url)
    updates, deletes, gets = Seen(), Seen(), Seen()
    w.register_function("t::updates", updates)
    w.register_function("t::deletes", deletes)
    w.register_function("t::gets", gets)
    w.observe(
        {"function_id": "state::update", "filters": {"output.new_value.n": {"$gte": 2}}},
        "t::updates",
    ).ready(timeout=WAIT)
    w.observe({"function_id": "state::delete"}, "t::deletes").ready(timeout=WAIT)
    w.observe({"function_id": "state::get"}, "t::gets").ready(timeout=WAIT)

    set_(w, "s", "k", {"n": 0})
    for _ in range(3):
        w.trigger(
            {
                "function_id": "state::update",
                "payload": {
                    "scope": "s",
                    "key": "k",
                    "ops": [{"type": "increment", "path": "n", "by": 1}],
                },
            }
        )
    assert w.trigger({"function_id": "state::get", "payload": {"scope": "s", "key": "k"}}) == {
        "n": 3
    }
    w.trigger({"function_id": "state::delete", "payload": {"scope": "s", "key": "k"}})
    wait_until(lambda: len(updates.calls) == 2 and deletes.calls and gets.calls)
    settle(server)
    assert [e["output"]["new_value"]["n"] for e in updates.envelopes()] == [2, 3]
    assert deletes.envelopes()[0]["output"] == {"n": 3}
    assert gets.envelopes()[0]["output"] == {"n": 3}
    assert len(gets.calls) == 1 and len(deletes.calls) == 1


def test_capture_subsets_and_on_error(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    only_input, failures, everything = Seen(), Seen(), Seen()
    w.register_function("t::input", only_input)
    w.register_function("t::failures", failures)
    w.register_function("t::everything", everything)
    w.observe({"function_id": "state::set", "capture": ["input"]}, "t::input").ready(timeout=WAIT)
    w.observe(
        {"function_id": "state::set", "on": "error", "capture": ["error", "metadata"]},
        "t::failures",
    ).ready(timeout=WAIT)
    w.observe(
        {
            "function_id": "state::set",
            "on": "complete",
            "capture": ["input", "output", "error", "caller", "metadata"],
        },
        "t::everything",
    ).ready(timeout=WAIT)

    set_(w, "s", "ok", 1)
    with pytest.raises(InvocationError) as bad_set:
        w.trigger(
            {"function_id": "state::set", "payload": {"scope": "s"}, "metadata": {"why": "bad"}}
        )
    assert bad_set.value.code == "deserialization_error"
    wait_until(lambda: only_input.calls and failures.calls and len(everything.calls) == 2)
    settle(server)

    (ok,) = only_input.envelopes()
    assert ok["input"] == {"scope": "s", "key": "ok", "value": 1}
    assert "output" not in ok and "caller" not in ok and "error" not in ok

    (failed,) = failures.envelopes()
    assert failed["status"] == "error"
    assert failed["error"]["code"] == "deserialization_error"
    assert failed["metadata"] == {"why": "bad"}
    assert "input" not in failed and "output" not in failed

    success, error = everything.envelopes()
    assert success["status"] == "success" and "error" not in success and "metadata" not in success
    assert error["status"] == "error" and "output" not in error
    assert error["input"] == {"scope": "s"}
    assert error["metadata"] == {"why": "bad"}


def test_filters_on_caller_and_metadata(server: Served, workers: Callable[..., Any]) -> None:
    watcher = workers(server.url, name="watcher")
    alice = workers(server.url, name="alice")
    bob = workers(server.url, name="bob")
    seen = Seen()
    watcher.register_function("t::seen", seen)
    watcher.observe(
        {
            "function_id": "state::set",
            "filters": {
                "$or": [
                    {"caller.worker_name": {"$eq": "alice"}},
                    {"metadata.tag": {"$in": ["urgent", "vip"]}},
                ]
            },
        },
        "t::seen",
    ).ready(timeout=WAIT)
    set_(alice, "s", "from-alice", 1)
    set_(bob, "s", "from-bob", 1)
    bob.trigger(
        {
            "function_id": "state::set",
            "payload": {"scope": "s", "key": "bob-urgent", "value": 1},
            "metadata": {"tag": "urgent"},
        }
    )
    wait_until(lambda: len(seen.calls) == 2)
    settle(server)
    assert [i["key"] for i in seen.inputs()] == ["from-alice", "bob-urgent"]


# ---- worker functions ------------------------------------------------------------------------


def test_an_observer_on_a_worker_function(server: Served, workers: Callable[..., Any]) -> None:
    owner = workers(server.url, name="owner")
    watcher = workers(server.url, name="watcher")
    caller = workers(server.url, name="caller")

    def create(order: dict[str, Any]) -> dict[str, Any]:
        if order.get("amount", 0) < 0:
            raise ValueError("negative amount")
        return {"id": "o-1", "amount": order["amount"]}

    owner.register_function("orders::create", create)
    big, failures = Seen(), Seen()
    watcher.register_function("t::big", big)
    watcher.register_function("t::failures", failures)
    watcher.observe(
        {"function_id": "orders::create", "filters": {"input.amount": {"$gte": 500}}}, "t::big"
    ).ready(timeout=WAIT)
    watcher.observe(
        {"function_id": "orders::create", "on": "error", "capture": ["input", "error"]},
        "t::failures",
    ).ready(timeout=WAIT)

    for amount in (10, 750):
        caller.trigger({"function_id": "orders::create", "payload": {"amount": amount}})
    with pytest.raises(Exception, match="negative amount"):
        caller.trigger({"function_id": "orders::create", "payload": {"amount": -1}})
    wait_until(lambda: big.calls and failures.calls)
    settle(server)
    (envelope,) = big.envelopes()
    assert envelope["input"] == {"amount": 750}  # as the caller sent it
    assert envelope["output"] == {"id": "o-1", "amount": 750}
    assert envelope["caller"]["worker_name"] == "caller"
    (failure,) = failures.envelopes()
    assert failure["input"] == {"amount": -1}
    assert failure["error"]["code"] == "invocation_failed"
    assert failure["error"]["message"] == "negative amount"


def test_a_source_registered_later_keeps_the_observer_pending(
    server: Served, workers: Callable[..., Any]
) -> None:
    watcher = workers(server.url, name="watcher")
    seen = Seen()
    watcher.register_function("t::seen", seen)
    handle = watcher.observe({"function_id": "later::fn"}, "t::seen")
    with pytest.raises(TimeoutError):
        handle.ready(timeout=0.3)
    assert handle.state == "pending"
    owner = workers(server.url, name="owner")
    owner.register_function("later::fn", lambda data: {"echo": data["x"]})
    handle.ready(timeout=WAIT)
    owner.trigger({"function_id": "later::fn", "payload": {"x": 1}})
    wait_until(lambda: seen.calls)
    assert seen.envelopes()[0]["output"] == {"echo": 1}
    assert seen.envelopes()[0]["input"] == {"x": 1}  # without the engine's _caller_worker_id


# ---- lifecycle ------------------------------------------------------------------------------


def test_max_fires_disposes_the_observer(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Seen()
    w.register_function("t::seen", seen)
    changes: list[tuple[str, Any]] = []
    handle = w.observe({"function_id": "state::set"}, "t::seen", {"max_fires": 2})
    handle.on_state_change(lambda state, reason: changes.append((state, reason)))
    handle.ready(timeout=WAIT)
    for i in range(4):
        set_(w, "s", f"k{i}", i)
    wait_until(lambda: handle.state == "disposed", what="disposed at max_fires")
    assert handle.reason is not None and handle.reason["code"] == "MAX_FIRES_REACHED"
    wait_until(lambda: ("disposed", handle.reason) in changes)
    settle(server)
    assert [i["key"] for i in seen.inputs()] == ["k0", "k1"]
    assert observed_sources(server) == {}


def test_expires_in_ms_disposes_the_observer(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Seen()
    w.register_function("t::seen", seen)
    handle = w.observe({"function_id": "state::set"}, "t::seen", {"expires_in_ms": 1000})
    handle.ready(timeout=WAIT)
    set_(w, "s", "before", 1)
    wait_until(lambda: handle.state == "disposed", what="expiry")
    assert handle.reason is not None and handle.reason["code"] == "EXPIRED"
    set_(w, "s", "after", 1)
    settle(server)
    assert [i["key"] for i in seen.inputs()] == ["before"]
    assert observed_sources(server) == {}


def test_unobserve_stops_activations(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Seen()
    w.register_function("t::seen", seen)
    handle = w.observe({"function_id": "state::set"}, "t::seen")
    handle.ready(timeout=WAIT)
    set_(w, "s", "a", 1)
    wait_until(lambda: seen.calls)
    handle.dispose()
    wait_until(lambda: observed_sources(server) == {}, what="unobserve")
    set_(w, "s", "b", 1)
    settle(server)
    assert [i["key"] for i in seen.inputs()] == ["a"]
    # the same id may be used again once disposed
    again = w.observe({"function_id": "state::set"}, "t::seen", {"id": handle.id})
    again.ready(timeout=WAIT)
    set_(w, "s", "c", 1)
    wait_until(lambda: len(seen.calls) == 2)


def test_observers_go_with_their_connection(server: Served, workers: Callable[..., Any]) -> None:
    watcher = workers(server.url, name="watcher")
    writer = workers(server.url, name="writer")
    target_owner = workers(server.url, name="target-owner")
    seen = Seen()
    target_owner.register_function("t::seen", seen)
    watcher.observe({"function_id": "state::set"}, "t::seen").ready(timeout=WAIT)
    assert observed_sources(server) == {"state::set": 1}
    shutdown(watcher)
    wait_until(lambda: observed_sources(server) == {}, what="observer removed on disconnect")
    set_(writer, "s", "k", 1)
    settle(server)
    assert seen.calls == []


def test_the_target_leaving_suspends_and_its_return_resumes(
    server: Served, workers: Callable[..., Any]
) -> None:
    watcher = workers(server.url, name="watcher")
    target_owner = workers(server.url, name="target-owner")
    target_owner.register_function("t::seen", Seen())
    changes: list[tuple[str, Any]] = []
    handle = watcher.observe({"function_id": "state::set"}, "t::seen")
    handle.on_state_change(lambda state, reason: changes.append((state, reason)))
    handle.ready(timeout=WAIT)
    shutdown(target_owner)
    wait_until(lambda: handle.state == "suspended", what="suspended")
    assert handle.reason is not None and handle.reason["code"] == "TARGET_UNAVAILABLE"
    assert observed_sources(server) == {}

    seen = Seen()
    workers(server.url, name="target-owner-2").register_function("t::seen", seen)
    wait_until(lambda: handle.state == "active", what="active again")
    set_(watcher, "s", "k", 1)
    wait_until(lambda: seen.calls)
    assert [state for state, _ in changes][-2:] == ["suspended", "active"]


def test_max_in_flight_queues_activations(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    gate = threading.Event()
    seen = Seen(gate)
    w.register_function("t::slow", seen)
    w.observe({"function_id": "state::set"}, "t::slow", {"max_in_flight": 1}).ready(timeout=WAIT)
    for i in range(4):
        set_(w, "s", f"k{i}", i)
    wait_until(lambda: seen.running == 1, what="the first activation running")
    time.sleep(0.3)
    assert seen.running == 1  # the others wait on the server
    gate.set()
    wait_until(lambda: len(seen.calls) == 4, what="all four activations")
    assert seen.most_running == 1
    assert [i["key"] for i in seen.inputs()] == ["k0", "k1", "k2", "k3"]  # in order


def test_an_activation_loop_stops_at_the_depth_limit(
    server: Served, workers: Callable[..., Any]
) -> None:
    w = workers(server.url)
    depths: list[int] = []

    def echo(envelope: dict[str, Any]) -> None:
        # writes what it observes: each write is observed again, one activation deeper
        inv = w.current_invocation()
        depths.append(inv.observe_depth if inv else -1)
        set_(w, "loop", "k", envelope["input"]["value"] + 1)

    w.register_function("t::echo", echo)
    w.observe(
        {"function_id": "state::set", "filters": {"input.scope": {"$eq": "loop"}}}, "t::echo"
    ).ready(timeout=WAIT)
    set_(w, "loop", "k", 0)
    wait_until(lambda: len(depths) == MAX_OBSERVE_DEPTH, what="the chain of activations")
    time.sleep(0.5)
    assert depths == list(range(1, MAX_OBSERVE_DEPTH + 1))
    assert server.store.get("loop", "k") == MAX_OBSERVE_DEPTH


def test_the_depth_limit_holds_through_a_worker_function(
    server: Served, workers: Callable[..., Any]
) -> None:
    """The observed write is made by another worker's function, called from the target."""
    observer_side = workers(server.url, name="observer-side")
    writer_side = workers(server.url, name="writer-side")
    activations: list[int] = []

    def write(payload: dict[str, Any]) -> None:
        set_(writer_side, "loop2", "k", payload["value"])

    def echo(envelope: dict[str, Any]) -> None:
        activations.append(envelope["input"]["value"])
        observer_side.trigger(
            {"function_id": "t::write", "payload": {"value": envelope["input"]["value"] + 1}}
        )

    writer_side.register_function("t::write", write)
    observer_side.register_function("t::echo", echo)
    observer_side.observe(
        {"function_id": "state::set", "filters": {"input.scope": {"$eq": "loop2"}}}, "t::echo"
    ).ready(timeout=WAIT)
    set_(writer_side, "loop2", "k", 0)
    wait_until(lambda: len(activations) == MAX_OBSERVE_DEPTH, what="the chain of activations")
    time.sleep(0.5)
    assert activations == list(range(MAX_OBSERVE_DEPTH))


def test_replaying_an_observer_keeps_it(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    seen = Seen()
    w.register_function("t::seen", seen)
    handle = w.observe({"function_id": "state::set"}, "t::seen", {"id": "fixed", "max_fires": 3})
    handle.ready(timeout=WAIT)
    set_(w, "s", "a", 1)
    wait_until(lambda: seen.calls)
    # what the SDK does on every reconnect: the same frame again, on its own loop
    w._loop.call_soon_threadsafe(w._send_observe, handle)
    time.sleep(0.3)
    set_(w, "s", "b", 1)
    set_(w, "s", "c", 1)
    wait_until(lambda: handle.state == "disposed")  # fires were kept: 3, not 2 + 2
    assert [i["key"] for i in seen.inputs()] == ["a", "b", "c"]


# ---- refusals: ready() raises -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "why"),
    [
        ({"input.scope": "orders"}, "bare value"),
        ({"input.scope": {"$regex": "o.*"}}, "unknown operator"),
        ({"$eq": 1}, "operator without a path"),
        ({"nope.scope": {"$eq": 1}}, "unknown root"),
        ({"@.scope": {"$eq": 1}}, "@ outside $any"),
        ({"input..scope": {"$eq": 1}}, "empty segment"),
        ({"input." + ".".join(["a"] * 17): {"$exists": True}}, "17 path segments"),
        ({"input.n": {"$in": list(range(257))}}, "257 set items"),
        ({"input.n": {"$eq": 2**53 + 1}}, "number beyond 2^53"),
        ({"input.s": {"$prefix": "x" * 9000}}, "over 8192 bytes"),
        ({f"input.k{i}": {"$eq": i} for i in range(65)}, "65 nodes"),
        ({"$or": []}, "empty $or"),
        ({"input.n": {"$gt": True}}, "boolean order bound"),
    ],
)
def test_invalid_filters_are_rejected(
    server: Served, workers: Callable[..., Any], filters: dict[str, Any], why: str
) -> None:
    w = workers(server.url)
    w.register_function("t::seen", Seen())
    handle = w.observe({"function_id": "state::set", "filters": filters}, "t::seen")
    with pytest.raises(ObserveRejection) as rejected:
        handle.ready(timeout=WAIT)
    assert rejected.value.code == "INVALID_FILTER", why
    assert handle.state == "error"
    assert observed_sources(server) == {}


def test_too_deep_filters_are_rejected(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    w.register_function("t::seen", Seen())
    nested: dict[str, Any] = {"input.a": {"$eq": 1}}
    for _ in range(7):
        nested = {"$not": nested}
    w.observe({"function_id": "state::set", "filters": nested}, "t::seen").ready(timeout=WAIT)
    handle = w.observe({"function_id": "state::set", "filters": {"$not": nested}}, "t::seen")
    with pytest.raises(ObserveRejection) as rejected:
        handle.ready(timeout=WAIT)
    assert rejected.value.code == "INVALID_FILTER"


@pytest.mark.parametrize(
    ("source", "target", "options", "code"),
    [
        ({"function_id": "state::set", "deliver": "input"}, "t::seen", {}, "UNSUPPORTED"),
        ({"function_id": "state::set", "on": "sometimes"}, "t::seen", {}, "UNSUPPORTED"),
        ({"function_id": "state::set", "capture": ["everything"]}, "t::seen", {}, "UNSUPPORTED"),
        ({"function_id": "engine::workers::register"}, "t::seen", {}, "UNSUPPORTED"),
        ({"function_id": "state::set"}, "state::set", {}, "UNSUPPORTED"),
        (
            {"function_id": "state::set", "args": {"cron": "* * * * *"}},
            "t::seen",
            {},
            "INVALID_ARGS",
        ),
        ({"function_id": "state::set"}, "t::seen", {"max_fires": 0}, "INVALID_OBSERVER"),
        ({"function_id": "state::set"}, "t::seen", {"max_in_flight": -1}, "INVALID_OBSERVER"),
        ({"function_id": "state::set"}, "t::seen", {"expires_in_ms": 0}, "INVALID_OBSERVER"),
    ],
)
def test_unsupported_or_invalid_observers_are_rejected(
    server: Served,
    workers: Callable[..., Any],
    source: dict[str, Any],
    target: str,
    options: dict[str, Any],
    code: str,
) -> None:
    w = workers(server.url)
    w.register_function("t::seen", Seen())
    handle = w.observe(source, target, options)
    with pytest.raises(ObserveRejection) as rejected:
        handle.ready(timeout=WAIT)
    assert rejected.value.code == code
    assert observed_sources(server) == {}


def test_functions_that_refuse_or_deliver_themselves(
    server: Served, workers: Callable[..., Any]
) -> None:
    owner = workers(server.url, name="owner")
    watcher = workers(server.url, name="watcher")
    owner.register_function("private::fn", lambda data: data, observe=ObserveHooks(allow=False))
    owner.register_function(
        "ticks::on-tick", lambda data: data, observe=ObserveHooks(delivery="owner")
    )
    watcher.register_function("t::seen", Seen())
    wait_until(lambda: server.on_loop(lambda: server.hub.router.owner("ticks::on-tick")))
    private = watcher.observe({"function_id": "private::fn"}, "t::seen")
    with pytest.raises(ObserveRejection) as refused:
        private.ready(timeout=WAIT)
    assert refused.value.code == "NOT_OBSERVABLE"
    owned = watcher.observe({"function_id": "ticks::on-tick"}, "t::seen")
    with pytest.raises(ObserveRejection) as unsupported:
        owned.ready(timeout=WAIT)
    assert unsupported.value.code == "UNSUPPORTED"
