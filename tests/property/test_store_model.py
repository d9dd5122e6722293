"""Hypothesis: the Store behaves like a dict model, across close and reopen."""

from __future__ import annotations

import copy
import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import evstate
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_scalars = json_scalars | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["", "a", "b", "users", "ü"])
paths = st.sampled_from(["", "n", "tags", "x"])
ops = st.lists(
    st.one_of(
        st.builds(lambda p, v: {"type": "set", "path": p, "value": v}, paths, json_values),
        st.builds(
            lambda p, b: {"type": "increment", "path": p, "by": b}, paths, st.integers(-5, 5)
        ),
        st.builds(
            lambda p, b: {"type": "decrement", "path": p, "by": b}, paths, st.integers(-5, 5)
        ),
        st.builds(lambda p, v: {"type": "append", "path": p, "value": v}, paths, json_values),
        st.builds(lambda p: {"type": "remove", "path": p}, paths),
        st.builds(
            lambda v: {"type": "merge", "value": v},
            st.dictionaries(st.sampled_from(["n", "m"]), json_scalars, max_size=2),
        ),
    ),
    max_size=4,
)


class StoreMachine(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="evstate-model-")
        self.store = self._open()
        self.model: dict[str, dict[str, Any]] = {}
        self.revision = 0

    def _open(self) -> evstate.Store:
        if self.kind == "memory":
            return evstate.open()
        return evstate.open(self.dir, fsync="never", segment_size_bytes=4096)

    @rule(scope=names, key=names, value=json_values)
    def set(self, scope: str, key: str, value: Any) -> None:
        old = self.model.get(scope, {}).get(key)
        result = self.store.set(scope, key, value)
        assert result == {"old_value": old, "new_value": value}
        self.model.setdefault(scope, {})[key] = copy.deepcopy(value)
        self.revision += 1

    @rule(scope=names, key=names, raw_ops=ops)
    def update(self, scope: str, key: str, raw_ops: list[dict[str, Any]]) -> None:
        keys = self.model.get(scope, {})
        missing = key not in keys
        current = {} if missing else copy.deepcopy(keys[key])
        expected, errors = apply_update_ops(current, parse_ops(raw_ops), missing=missing)
        result = self.store.update(scope, key, raw_ops)
        assert result["new_value"] == expected
        assert result.get("errors", []) == errors
        self.model.setdefault(scope, {})[key] = expected
        self.revision += 1

    @rule(scope=names, key=names)
    def delete(self, scope: str, key: str) -> None:
        keys = self.model.get(scope, {})
        assert self.store.delete(scope, key) == keys.pop(key, None)
        if scope in self.model and not keys:
            del self.model[scope]
        self.revision += 1

    @precondition(lambda self: self.kind == "file")
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @invariant()
    def same_as_model(self) -> None:
        assert self.store.revision == self.revision
        assert self.store.list_groups() == {
            "groups": sorted(s for s in self.model if self.model[s])
        }
        for scope, keys in self.model.items():
            assert self.store.list(scope) == dict(sorted(keys.items()))
            assert self.store.list_values(scope) == list(keys.values())

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class FileStoreMachine(StoreMachine):
    kind = "file"


TestMemoryStoreModel = StoreMachine.TestCase
TestMemoryStoreModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestFileStoreModel = FileStoreMachine.TestCase
TestFileStoreModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
