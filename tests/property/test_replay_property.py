"""Hypothesis: snapshot + tail == full replay == live state, and at(r) matches a model."""

from __future__ import annotations

import copy
import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

import evstate
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops

keys = st.sampled_from(["a", "b", "c"])
scopes = st.sampled_from(["x", "y"])
values = st.one_of(
    st.integers(-5, 5), st.text(max_size=3), st.none(), st.lists(st.booleans(), max_size=2)
)
step = st.one_of(
    st.tuples(st.just("set"), scopes, keys, values),
    st.tuples(st.just("inc"), scopes, keys, st.integers(-3, 3)),
    st.tuples(st.just("delete"), scopes, keys, st.none()),
    st.tuples(st.just("snapshot"), st.none(), st.none(), st.none()),
)


def _model_apply(model: dict[str, dict[str, Any]], op: tuple[Any, ...]) -> None:
    kind, scope, key, arg = op
    if kind == "set":
        model.setdefault(scope, {})[key] = copy.deepcopy(arg)
    elif kind == "inc":
        keys_ = model.get(scope, {})
        missing = key not in keys_
        current = {} if missing else copy.deepcopy(keys_[key])
        new, _ = apply_update_ops(
            current, parse_ops([{"type": "increment", "path": "n", "by": arg}]), missing=missing
        )
        model.setdefault(scope, {})[key] = new
    elif kind == "delete":
        model.get(scope, {}).pop(key, None)
        if scope in model and not model[scope]:
            del model[scope]


def _store_apply(store: evstate.Store, op: tuple[Any, ...]) -> bool:
    kind, scope, key, arg = op
    if kind == "set":
        store.set(scope, key, arg)
    elif kind == "inc":
        store.update(scope, key, [{"type": "increment", "path": "n", "by": arg}])
    elif kind == "delete":
        store.delete(scope, key)
    else:
        store.snapshot()
        return False
    return True


def _state(view: Any) -> dict[str, dict[str, Any]]:
    return {s: view.list(s) for s in view.list_groups()["groups"]}


@settings(max_examples=40, deadline=None)
@given(st.lists(step, max_size=40), st.sampled_from(["file", "memory"]))
def test_replay_paths_agree_and_at_matches_the_model(ops: list[Any], kind: str) -> None:
    directory = tempfile.mkdtemp(prefix="evstate-replay-")
    try:
        open_store = (
            (lambda: evstate.open(directory, retention="forever"))
            if kind == "file"
            else evstate.open
        )
        store = open_store()
        model: dict[str, dict[str, Any]] = {}
        history = [copy.deepcopy(model)]  # history[r] = model state at revision r
        for op in ops:
            if _store_apply(store, op):
                _model_apply(model, op)
                history.append(copy.deepcopy(model))
        live = _state(store)
        assert live == {s: dict(sorted(k.items())) for s, k in model.items() if k}
        for revision, expected in enumerate(history):
            got = _state(store.at(revision))
            assert got == {s: dict(sorted(k.items())) for s, k in expected.items() if k}, revision
        assert store.verify() == []
        store.close()
        if kind == "file":
            with evstate.open(directory) as reopened:  # newest snapshot + tail
                assert _state(reopened) == live
            for snap in __import__("pathlib").Path(directory).glob("*.snap"):
                snap.unlink()
            with evstate.open(directory) as full:  # full replay
                assert _state(full) == live
    finally:
        shutil.rmtree(directory, ignore_errors=True)
