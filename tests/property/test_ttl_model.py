"""Model-based test of time-to-live, with time as an input (an injected clock, no sleeping).

A Hypothesis state machine drives a memory store and a file store (reopened now and then)
through set (with and without ``ttl_ms``), update, delete, compare-and-set, batches, the
passing of time, ``expire()`` and snapshots, against a model of values and deadlines. After
every step, every read agrees with the model at the current time (an expired key is gone at
once), ``ttl()`` reports the model's remaining time, and after ``expire()`` every key past
its deadline ends its history with a ``deleted`` event whose ``reason`` is ``expired`` and
whose old value is the model's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import evstate
from evstate.config import Config

EXAMPLES = int(os.environ.get("EVSTATE_MODEL_EXAMPLES", "50"))

scopes = st.sampled_from(["a", "b"])
keys = st.sampled_from(["k0", "k1", "k2"])
values = st.integers(0, 9) | st.builds(lambda n: {"n": n}, st.integers(0, 9))
ttls = st.none() | st.integers(1, 400)


class TtlMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_800_000_000_000
        self.dir = tempfile.mkdtemp(prefix="evstate-ttl-")
        self.model: dict[tuple[str, str], tuple[Any, int | None]] = {}
        self.stores = {"memory": self._open("memory"), "file": self._open("file")}

    def _clock(self) -> int:
        return self.now

    def _open(self, kind: str) -> evstate.Store:
        if kind == "memory":
            config = Config(store_method="in_memory")
        else:
            config = Config(file_path=self.dir, save_interval_ms=3_600_000)
        return evstate.Store(config, clock=self._clock)

    def _live(self) -> dict[tuple[str, str], tuple[Any, int | None]]:
        return {
            where: (value, deadline)
            for where, (value, deadline) in self.model.items()
            if deadline is None or deadline > self.now
        }

    def _forget_expired(self) -> None:
        self.model = self._live()

    # ---- rules ----------------------------------------------------------------------

    @rule(scope=scopes, key=keys, value=values, ttl=ttls)
    def set(self, scope: str, key: str, value: Any, ttl: int | None) -> None:
        self._forget_expired()
        for store in self.stores.values():
            store.set(scope, key, value, ttl_ms=ttl)
        self.model[(scope, key)] = (value, None if ttl is None else self.now + ttl)

    @rule(scope=scopes, key=keys, by=st.integers(1, 3))
    def update(self, scope: str, key: str, by: int) -> None:
        self._forget_expired()
        old, deadline = self.model.get((scope, key), ({}, None))
        ops = [{"type": "increment", "path": "n", "by": by}]
        results = [store.update(scope, key, ops) for store in self.stores.values()]
        assert results[0] == results[1]
        if "errors" not in results[0]:
            self.model[(scope, key)] = (results[0]["new_value"], deadline)
        else:
            assert results[0]["new_value"] == old
            self.model[(scope, key)] = (old, deadline)

    @rule(scope=scopes, key=keys)
    def delete(self, scope: str, key: str) -> None:
        self._forget_expired()
        expected = self.model.pop((scope, key), (None, None))[0]
        for store in self.stores.values():
            assert store.delete(scope, key) == expected

    @rule(scope=scopes, key=keys, expected=st.none() | values, value=values, ttl=ttls)
    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, ttl: int | None
    ) -> None:
        self._forget_expired()
        current = self.model.get((scope, key))
        swaps = (expected is None and current is None) or (
            current is not None and expected is not None and current[0] == expected
        )
        for store in self.stores.values():
            result = store.compare_and_set(scope, key, expected, value, ttl_ms=ttl)
            assert result["swapped"] == swaps, (result, current, expected)
        if swaps:
            self.model[(scope, key)] = (value, None if ttl is None else self.now + ttl)

    @rule(changes=st.lists(st.tuples(scopes, keys, values, ttls), min_size=1, max_size=4))
    def batch(self, changes: list[tuple[str, str, Any, int | None]]) -> None:
        self._forget_expired()
        for store in self.stores.values():
            with store.batch() as batch:
                for scope, key, value, ttl in changes:
                    batch.set(scope, key, value, ttl_ms=ttl)
        for scope, key, value, ttl in changes:
            self.model[(scope, key)] = (value, None if ttl is None else self.now + ttl)

    @rule(ms=st.integers(0, 500))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def expire(self) -> None:
        due = {where: value for where, (value, dl) in self.model.items() if dl and dl <= self.now}
        for store in self.stores.values():
            store.expire()
            for (scope, key), value in due.items():
                last = store.history(scope, key)[-1]
                assert (last.event_type, last.reason, last.old_value) == (
                    "deleted",
                    "expired",
                    value,
                )
        self._forget_expired()

    @rule()
    def snapshot(self) -> None:
        self.stores["file"].snapshot()

    @rule()
    def reopen(self) -> None:
        self.stores["file"].close()
        self.stores["file"] = self._open("file")

    # ---- checks ---------------------------------------------------------------------

    @invariant()
    def reads_agree_with_the_model(self) -> None:
        live = self._live()
        for store in self.stores.values():
            for scope in ("a", "b"):
                expected = {k: v for (s, k), (v, _) in live.items() if s == scope}
                assert store.list(scope) == dict(sorted(expected.items()))
                assert store.list_keys(scope) == sorted(expected)
                for key in ("k0", "k1", "k2"):
                    value, deadline = live.get((scope, key), (None, None))
                    assert store.get(scope, key) == value
                    remaining = None if deadline is None else deadline - self.now
                    assert store.ttl(scope, key) == remaining
            groups = sorted({s for s, _ in live})
            assert store.list_groups() == {"groups": groups}
            assert store.at().list("a") == store.list("a")

    def teardown(self) -> None:
        for store in self.stores.values():
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestTtlModel = TtlMachine.TestCase
TestTtlModel.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None)
