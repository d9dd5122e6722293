"""The iii state worker's functions and ``evstate::batch`` through the real Python iii SDK.

``state::compare-and-set``, ``state::list_keys``, ``state::list_entries`` and
``evstate::batch`` called by real ``iii-sdk==0.25.0`` workers over a real socket, against a
server over each store kind (memory, file, redis): shapes, every error code, a
compare-and-set race between separate worker connections, and a listing continued by
another connection while others write.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from iii import InvocationError

from evstate.config import Config
from tests.redis.server import RedisServer
from tests.server.harness import Served

KINDS = ["memory", "file", "redis"]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-sdk")).start()
    yield server
    server.stop()


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, make_server: Callable[..., Served]) -> Served:
    if request.param == "memory":
        return make_server(max_open_listings=2)
    if request.param == "file":
        return make_server(file=True, max_open_listings=2)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.flush()
    config = Config(adapter="redis", redis_url=redis_server.url, max_open_listings=2)
    return make_server(config=config)


def call(worker: Any, function_id: str, payload: Any) -> Any:
    return worker.trigger({"function_id": function_id, "payload": payload})


def error_of(worker: Any, function_id: str, payload: Any) -> InvocationError:
    with pytest.raises(InvocationError) as info:
        call(worker, function_id, payload)
    return info.value


def test_compare_and_set(served: Served, workers: Callable[..., Any]) -> None:
    w = workers(served.url)
    cas = "state::compare-and-set"
    assert call(w, cas, {"scope": "locks", "key": "l", "value": {"by": "w1"}}) == {"swapped": True}
    assert call(w, cas, {"scope": "locks", "key": "l", "expected": None, "value": 1}) == {
        "swapped": False,
        "current": {"by": "w1"},
    }
    assert call(w, cas, {"scope": "locks", "key": "l", "expected": {"by": "w1"}, "value": 2}) == {
        "swapped": True
    }
    assert served.store.get("locks", "l") == 2
    [*_, event] = served.store.history("locks", "l")
    assert (event.event_type, event.old_value, event.new_value) == ("updated", {"by": "w1"}, 2)
    missing = error_of(w, cas, {"scope": "locks", "key": "l"})
    assert missing.code == "deserialization_error"
    assert "missing field `value`" in missing.message


def test_compare_and_set_race_between_connections(
    served: Served, workers: Callable[..., Any]
) -> None:
    contenders = [workers(served.url, name=f"racer-{i}") for i in range(4)]
    rounds = 10
    call(contenders[0], "state::set", {"scope": "race", "key": "t", "value": 0})
    barrier = threading.Barrier(len(contenders))
    wins: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run(worker: Any) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                result = call(
                    worker,
                    "state::compare-and-set",
                    {"scope": "race", "key": "t", "expected": r, "value": r + 1},
                )
                if result["swapped"]:
                    with lock:
                        wins.append(r)
                else:
                    assert result["current"] == r + 1
                barrier.wait(timeout=30)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(w,)) for w in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert sorted(wins) == list(range(rounds))


def test_list_keys(served: Served, workers: Callable[..., Any]) -> None:
    w = workers(served.url)
    for key in ("b", "a", "ключ", 'q"uote'):
        call(w, "state::set", {"scope": "s", "key": key, "value": 1})
    assert call(w, "state::list_keys", {"scope": "s"}) == {
        "keys": sorted(["b", "a", "ключ", 'q"uote'])
    }
    assert call(w, "state::list_keys", {"scope": "empty"}) == {"keys": []}


def test_list_entries_pages_continue_on_another_connection(
    served: Served, workers: Callable[..., Any]
) -> None:
    first, second = workers(served.url, name="lister-1"), workers(served.url, name="lister-2")
    for i in range(12):
        served.store.set("big", f"k{i:02d}", {"i": i, "text": 'é"\\\n' * i})
    page = call(first, "state::list_entries", {"scope": "big", "limit": 5, "max_bytes": 600})
    served.store.delete("big", "k11")  # after the first page: still listed
    entries = list(page["entries"])
    while not page["done"]:
        assert len(json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode()) <= 600
        page = call(
            second,
            "state::list_entries",
            {"scope": "big", "limit": 5, "max_bytes": 600, "cursor": page["next_cursor"]},
        )
        entries += page["entries"]
    assert [k for k, _ in entries] == [f"k{i:02d}" for i in range(12)]
    assert page["total"] == 12 and page["next_cursor"] is None


def test_list_entries_error_codes(served: Served, workers: Callable[..., Any]) -> None:
    w = workers(served.url)
    for i in range(4):
        served.store.set("s", f"k{i}", i)
    served.store.set("s", "zz-huge", "x" * 2000)
    fid = "state::list_entries"
    for payload, code in (
        ({"scope": "s", "limit": 0}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "limit": 1001}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "max_bytes": 255}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "max_bytes": 8_000_001}, "INVALID_PAGE_LIMITS"),
        ({"scope": "s", "cursor": "not-a-cursor"}, "INVALID_CURSOR"),
    ):
        error = error_of(w, fid, payload)
        assert error.code == code and error.message.startswith(code + ":"), error
    page = call(w, fid, {"scope": "s", "limit": 4, "max_bytes": 300})
    assert len(page["entries"]) == 4
    too_large = error_of(
        w, fid, {"scope": "s", "limit": 4, "max_bytes": 300, "cursor": page["next_cursor"]}
    )
    assert too_large.code == "ROW_TOO_LARGE" and "zz-huge" not in too_large.message
    # that listing stays open (the failure did not consume its cursor): with one more open,
    # max_open_listings=2 is reached
    one = call(w, fid, {"scope": "s", "limit": 1})
    capacity = error_of(w, fid, {"scope": "s", "limit": 1})
    assert capacity.code == "SNAPSHOT_CAPACITY"
    call(w, fid, {"scope": "s", "limit": 1, "cursor": one["next_cursor"]})
    reused = error_of(w, fid, {"scope": "s", "limit": 1, "cursor": one["next_cursor"]})
    assert reused.code == "INVALID_CURSOR"
    other_scope = error_of(
        w, fid, {"scope": "t", "limit": 4, "max_bytes": 300, "cursor": page["next_cursor"]}
    )
    assert other_scope.code == "INVALID_CURSOR"


def test_batch(served: Served, workers: Callable[..., Any]) -> None:
    w = workers(served.url)
    result = call(
        w,
        "evstate::batch",
        {
            "ops": [
                {"op": "set", "scope": "acct", "key": "a", "value": {"units": 5}},
                {"op": "set", "scope": "acct", "key": "b", "value": {"units": 5}},
                {
                    "op": "update",
                    "scope": "acct",
                    "key": "a",
                    "ops": [{"type": "increment", "path": "units", "by": -2}],
                },
                {
                    "op": "compare-and-set",
                    "scope": "acct",
                    "key": "b",
                    "expected": {"units": 5},
                    "value": {"units": 7},
                },
            ]
        },
    )
    assert result["revision"] == served.store.revision
    assert [r["event_type"] for r in result["results"]] == [
        "created",
        "created",
        "updated",
        "updated",
    ]
    assert served.store.list("acct") == {"a": {"units": 3}, "b": {"units": 7}}
    failed = error_of(
        w,
        "evstate::batch",
        {
            "ops": [
                {"op": "delete", "scope": "acct", "key": "a"},
                {"op": "compare-and-set", "scope": "acct", "key": "b", "expected": 1, "value": 2},
            ]
        },
    )
    assert failed.code == "CAS_FAILED"
    assert served.store.list("acct") == {"a": {"units": 3}, "b": {"units": 7}}
    bad = error_of(w, "evstate::batch", {"ops": [{"op": "explode", "scope": "s", "key": "k"}]})
    assert bad.code == "deserialization_error"
