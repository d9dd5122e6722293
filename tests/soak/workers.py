"""The workloads of the soak test, and the hook for more.

Each worker is a function ``worker(ctx)`` run in its own thread until ``ctx.stop`` is set.
It writes through whatever path it likes and reports every acknowledged write with
``ctx.ack(scope, key, value)`` (``value`` None for a delete) in the order its writes were
acknowledged; it owns the keys it writes (no other worker writes them), so the last
acknowledgement is the key's final value. Readers call nothing.

To add a workload (the server's clients, a redis adapter...), append a function to
:data:`WORKERS` from your own module, e.g. in a ``conftest.py``::

    from tests.soak.workers import WORKERS

    def server_client(ctx):
        with connect(ctx.store.config) as client:   # your client
            n = 0
            while not ctx.stop.is_set():
                client.call("state::set", {"scope": "srv", "key": f"c{n % 100}", "value": n})
                ctx.ack("srv", f"c{n % 100}", n)
                n += 1
                ctx.throttle()

    WORKERS.append(server_client)
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import evstate
from evstate import UpdateOp

Worker = Callable[["SoakContext"], None]


@dataclass
class SoakContext:
    """What a worker gets: the store, the stop signal, and where to report writes."""

    store: evstate.Store
    stop: threading.Event
    seed: int
    acked: dict[tuple[str, str], Any] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)  # acknowledged writes per scope
    increments: int = 0  # acknowledged increments of shared/counter
    backlog: threading.Event = field(default_factory=threading.Event)  # set: triggers behind
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, scope: str, key: str, value: Any) -> None:
        """Record an acknowledged write (``value`` None: deleted)."""
        with self._lock:
            self.acked[(scope, key)] = value
            self.writes[scope] = self.writes.get(scope, 0) + 1

    def throttle(self) -> None:
        """Wait while the triggers are far behind (writers never wait for triggers; the
        soak does, so that the final catch-up fits its time budget)."""
        while self.backlog.is_set() and not self.stop.is_set():
            self.stop.wait(0.01)


def writer(ctx: SoakContext, name: str) -> None:
    """set / update / delete on keys of its own, checking each returned old value."""
    rng = random.Random(f"{ctx.seed}-{name}")
    model: dict[str, Any] = {}
    n = 0
    while not ctx.stop.is_set():
        key = f"{name}-{rng.randrange(64)}"
        roll = rng.random()
        if roll < 0.55:
            value = {"n": n, "pad": "x" * rng.randrange(0, 300)}
            result = ctx.store.set("w", key, value)
            assert result["old_value"] == model.get(key), (key, result, model.get(key))
        elif roll < 0.85:
            result = ctx.store.update(
                "w", key, [UpdateOp.increment("n", 1), UpdateOp.set("by", name)]
            )
            assert result["old_value"] == model.get(key)
            value = result["new_value"]
        else:
            assert ctx.store.delete("w", key) == model.get(key)
            value = None
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value
        ctx.ack("w", key, value)
        n += 1
        ctx.throttle()


def incrementer(ctx: SoakContext) -> None:
    """Atomic increments of one shared key (its final value counts them)."""
    while not ctx.stop.is_set():
        ctx.store.update("shared", "counter", [UpdateOp.increment("n", 1)])
        with ctx._lock:
            ctx.increments += 1
        ctx.throttle()


WORKERS: list[Worker] = [
    lambda ctx: writer(ctx, "w1"),
    lambda ctx: writer(ctx, "w2"),
    lambda ctx: writer(ctx, "w3"),
    incrementer,
]
