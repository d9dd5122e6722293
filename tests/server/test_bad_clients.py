"""Bad clients: the server keeps serving everyone else and loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from evstate.config import Config
from tests.server.harness import WAIT, Raw, Served, register_state_trigger, wait_until


def set_frame(i: int, scope: str = "s", invocation_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "invokefunction",
        "function_id": "state::set",
        "data": {"scope": scope, "key": f"k{i}", "value": i},
    }
    if invocation_id is not None:
        frame["invocation_id"] = invocation_id
    return frame


def test_garbage_does_not_disturb_others(
    server: Served, raw: Callable[..., Raw], workers: Callable[..., Any]
) -> None:
    good = workers(server.url)
    vandal = raw(server.url)
    stop = threading.Event()

    def flood() -> None:
        rng = 0
        while not stop.is_set():
            rng += 1
            vandal.send(os.urandom(64 + rng % 200))
            vandal.send("{" * (rng % 50) + "garbage")
            vandal.send(json.dumps([rng, {"type": "invokefunction"}]))
            vandal.send(json.dumps({"type": "invokefunction", "function_id": None, "data": rng}))
            vandal.send(json.dumps({"type": "registertrigger", "id": rng, "config": "x"}))
            time.sleep(0.001)

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        for i in range(100):
            good.trigger(
                {"function_id": "state::set", "payload": {"scope": "g", "key": str(i), "value": i}}
            )
    finally:
        stop.set()
        flooder.join(10)
    assert len(server.store.list("g")) == 100
    # the vandal is still connected and still served
    assert vandal.call("state::get", {"scope": "g", "key": "7"})["result"] == 7


def test_oversized_message_closes_only_that_connection(
    make_server: Callable[..., Served], raw: Callable[..., Raw]
) -> None:
    served = make_server(config=Config(store_method="in_memory", server_max_message_bytes=4096))
    big, bystander = raw(served.url), raw(served.url)
    big.send(
        set_frame(1, invocation_id="big")
        | {"data": {"scope": "s", "key": "k", "value": "x" * 8000}}
    )
    with pytest.raises(ConnectionClosed) as info:
        big.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert served.store.revision == 0  # nothing of it was applied
    assert bystander.call("state::set", {"scope": "s", "key": "k", "value": 1})["result"]
    # a message under the limit sent in fragments is reassembled
    text = json.dumps(set_frame(2, invocation_id="frag"))
    bystander.ws.send([text[:10], text[10:30], text[30:]])
    assert bystander.recv_type("invocationresult")["invocation_id"] == "frag"
    assert served.store.get("s", "k2") == 2


def test_client_disconnecting_mid_call_loses_nothing(
    server: Served, raw: Callable[..., Raw]
) -> None:
    client = raw(server.url)
    for i in range(500):
        client.send(set_frame(i, invocation_id=f"c{i}"))
    client.close()  # without reading a single answer
    wait_until(lambda: len(server.store.list("s")) == 500, what="every call sent to be applied")
    assert raw(server.url).call("state::get", {"scope": "s", "key": "k499"})["result"] == 499


def test_client_that_never_reads_does_not_block_others(
    server: Served, raw: Callable[..., Raw], workers: Callable[..., Any]
) -> None:
    deaf = raw(server.url, max_size=None)
    deaf.ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.store.set("big", "k", "v" * 60_000)

    def ask() -> None:
        with contextlib.suppress(ConnectionClosed):
            for i in range(400):
                deaf.send(
                    {
                        "type": "invokefunction",
                        "function_id": "state::get",
                        "data": {"scope": "big", "key": "k"},
                        "invocation_id": str(i),
                    }
                )

    sender = threading.Thread(target=ask)
    sender.start()  # 400 answers of 60 kB each that nobody reads
    good = workers(server.url)
    started = time.monotonic()
    for i in range(50):
        good.trigger(
            {"function_id": "state::set", "payload": {"scope": "g", "key": str(i), "value": i}}
        )
    assert time.monotonic() - started < 5
    assert len(server.store.list("g")) == 50
    # the server stopped reading the deaf client once its answers piled up
    conn = next(c for c in server.hub.connections.values() if c.worker_id == deaf.worker_id)
    assert conn.ws.transport.get_write_buffer_size() > 0
    deaf.close()
    sender.join(WAIT)


def test_slow_trigger_worker_delays_only_itself(
    server: Served, raw: Callable[..., Raw], workers: Callable[..., Any]
) -> None:
    slow = raw(server.url)  # takes its first event and never answers
    slow.send({"type": "registerfunction", "id": "slow::on"})
    slow.send(
        {
            "type": "registertrigger",
            "id": "t",
            "trigger_type": "state",
            "function_id": "slow::on",
            "config": {"scope": "s"},
        }
    )
    fast = workers(server.url)
    seen: list[Any] = []
    fast.register_function("fast::on", lambda event: seen.append(event["new_value"]))
    register_state_trigger(fast, "fast::on", scope="s")
    wait_until(lambda: len(server.trigger_names()) == 2)
    for i in range(20):
        fast.trigger(
            {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": i}}
        )
    wait_until(lambda: seen == list(range(20)), what="the fast trigger")
    held = slow.recv_type("invokefunction")
    assert held["data"]["new_value"] == 0
    status = {n: s for n, s in server.store.trigger_status().items() if "slow" in n}
    assert next(iter(status.values()))["lag"] == 20  # waiting, not lost
    # it answers at last: the rest follows, in order
    slow.send(
        {
            "type": "invocationresult",
            "invocation_id": held["invocation_id"],
            "function_id": "slow::on",
        }
    )
    for i in range(1, 20):
        frame = slow.recv_type("invokefunction")
        assert frame["data"]["new_value"] == i
        slow.send(
            {
                "type": "invocationresult",
                "invocation_id": frame["invocation_id"],
                "function_id": "slow::on",
            }
        )
    server.store.wait_for_triggers(timeout=5)


def test_flood_of_calls_is_bounded_and_served(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)
    n = 3000
    for i in range(n):
        client.send(set_frame(i, invocation_id=str(i)))
    answers = {client.recv_type("invocationresult")["invocation_id"] for _ in range(n)}
    assert len(answers) == n
    assert len(server.store.list("s")) == n
