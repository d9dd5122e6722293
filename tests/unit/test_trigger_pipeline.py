"""Pipelined trigger delivery (``max_in_flight`` > 1, handlers that return futures).

Calls start in revision order and overlap; the cursor passes an event only when it and every
event before it completed; a failed call is retried before the cursor moves past it, then
parked. Futures are completed by another thread, out of order, as a remote worker would.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from typing import Any

import pytest

import evstate


class Completer:
    """Completes the futures a handler returns, from its own thread, in a shuffled order."""

    def __init__(self, fail: set[int] | None = None, fail_times: int = 1) -> None:
        self.started: list[int] = []
        self.completed: list[int] = []
        self._fail = dict.fromkeys(fail or set(), fail_times)
        self._pending: list[tuple[int, concurrent.futures.Future[Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.max_pending = 0

    def handler(self, event: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self.started.append(event.revision)
            self._pending.append((event.revision, future))
            self.max_pending = max(self.max_pending, len(self._pending))
        return future

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.is_set():
            with self._lock:
                batch, self._pending = self._pending, []
            rng.shuffle(batch)
            for revision, future in batch:
                if self._fail.get(revision, 0) > 0:
                    self._fail[revision] -= 1
                    future.set_exception(RuntimeError(f"failed {revision}"))
                else:
                    self.completed.append(revision)
                    future.set_result(None)
            time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_calls_overlap_start_in_order_and_the_cursor_waits_for_the_prefix() -> None:
    completer = Completer()
    with evstate.open() as store:
        store.trigger("p", completer.handler, scope="s", max_in_flight=16)
        for i in range(300):
            store.set("s", f"k{i % 7}", i)
            store.set("other", "x", i)
        store.wait_for_triggers(timeout=30)
        completer.close()
        revisions = [e.revision for e in store.events(scope="s")]
        assert completer.started == revisions  # started in revision order, each once
        assert sorted(completer.completed) == revisions
        assert completer.max_pending > 1  # they did overlap
        assert store.trigger_status()["p"]["cursor"] == store.revision


def test_a_failed_call_is_retried_before_the_cursor_passes_it() -> None:
    completer = Completer(fail={10, 40}, fail_times=2)
    with evstate.open() as store:
        store.trigger("p", completer.handler, max_in_flight=8)
        for i in range(60):
            store.set("s", "k", i)
        store.wait_for_triggers(timeout=30)
        completer.close()
        assert store.parked_events("p") == []
        assert sorted(set(completer.completed)) == list(range(1, 61))
        assert completer.started.count(10) == 3  # the first call and two retries


def test_a_call_that_keeps_failing_is_parked_and_delivery_goes_on() -> None:
    completer = Completer(fail={5}, fail_times=100)
    with evstate.open() as store:
        store.trigger("p", completer.handler, max_in_flight=4)
        for i in range(20):
            store.set("s", "k", i)
        store.wait_for_triggers(timeout=30)
        completer.close()
        assert [letter["revision"] for letter in store.parked_events("p")] == [5]
        assert set(range(1, 21)) - {5} <= set(completer.completed)


def test_sequential_handlers_may_return_futures_too() -> None:
    completer = Completer()
    with evstate.open() as store:
        store.trigger("p", completer.handler)  # max_in_flight 1: one at a time
        for i in range(30):
            store.set("s", "k", i)
        store.wait_for_triggers(timeout=30)
        completer.close()
        assert completer.max_pending == 1
        assert completer.completed == list(range(1, 31))


@pytest.mark.parametrize("bad", [0, -1, 1025, 2.0, True, "4"])
def test_max_in_flight_is_checked(bad: Any) -> None:
    with evstate.open() as store, pytest.raises(evstate.InvalidRequestError):
        store.trigger("p", lambda e: None, max_in_flight=bad)
