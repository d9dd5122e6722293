"""A worker trigger registered with ``max_in_flight`` (an evstate extension of the config).

Over a raw socket: several invocations arrive before any is answered, in revision order;
answers out of order; the cursor reaches the head only once every event was answered; an
error answer is retried before the cursor passes it. Without the option, one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.server.harness import WAIT, Raw, Served, wait_until


def _register(worker: Raw, function_id: str, config: dict[str, Any]) -> None:
    worker.send({"type": "registerfunction", "id": function_id})
    worker.send(
        {
            "type": "registertrigger",
            "id": "t1",
            "trigger_type": "state",
            "function_id": function_id,
            "config": config,
        }
    )


def _invocations(worker: Raw, count: int) -> list[dict[str, Any]]:
    return [worker.recv_type("invokefunction") for _ in range(count)]


def _answer(worker: Raw, frame: dict[str, Any], error: bool = False) -> None:
    answer: dict[str, Any] = {
        "type": "invocationresult",
        "invocation_id": frame["invocation_id"],
        "function_id": frame["function_id"],
    }
    if error:
        answer["error"] = {"code": "boom", "message": "not now"}
    else:
        answer["result"] = None
    worker.send(answer)


def _cursor(served: Served) -> int:
    status = served.store.trigger_status()
    return int(next(iter(status.values()))["cursor"]) if status else -1


def test_several_in_flight_in_order_answered_out_of_order(
    server: Served, raw: Callable[..., Raw]
) -> None:
    worker = raw(server.url)
    _register(worker, "w::on", {"scope": "s", "max_in_flight": 4})
    wait_until(lambda: server.trigger_names(), what="trigger registered")
    for i in range(6):
        server.store.set("s", f"k{i}", i)
    first = _invocations(worker, 4)  # four before any answer
    assert [f["data"]["new_value"] for f in first] == [0, 1, 2, 3]
    worker.nothing(0.3)  # the window is full
    _answer(worker, first[2])
    _answer(worker, first[1])
    worker.nothing(0.3)  # the oldest is unanswered: nothing more, the cursor stays
    assert _cursor(server) < 2
    _answer(worker, first[0])
    rest = _invocations(worker, 2)
    assert [f["data"]["new_value"] for f in rest] == [4, 5]
    _answer(worker, first[3])
    _answer(worker, rest[1], error=True)  # retried before the cursor passes it
    _answer(worker, rest[0])
    retry = worker.recv_type("invokefunction", timeout=WAIT)
    assert retry["data"]["new_value"] == 5
    _answer(worker, retry)
    wait_until(lambda: _cursor(server) == server.store.revision, what="cursor at the head")


def test_without_the_option_one_at_a_time(server: Served, raw: Callable[..., Raw]) -> None:
    worker = raw(server.url)
    _register(worker, "w::on", {"scope": "s"})
    wait_until(lambda: server.trigger_names(), what="trigger registered")
    for i in range(3):
        server.store.set("s", f"k{i}", i)
    for value in range(3):
        frame = worker.recv_type("invokefunction")
        assert frame["data"]["new_value"] == value
        worker.nothing(0.2)
        _answer(worker, frame)


def test_a_bad_max_in_flight_is_refused(server: Served, raw: Callable[..., Raw]) -> None:
    worker = raw(server.url)
    worker.send({"type": "registerfunction", "id": "w::on"})
    for bad in (0, 1025, "8", 2.5):
        worker.send(
            {
                "type": "registertrigger",
                "id": f"bad-{bad}",
                "trigger_type": "state",
                "function_id": "w::on",
                "config": {"max_in_flight": bad},
            }
        )
        frame = worker.recv_type("triggerregistrationresult")
        assert frame.get("error"), frame
