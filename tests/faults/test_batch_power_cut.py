"""A batch survives a crash or power cut wholly or not at all (FaultyIO, Hypothesis).

Hypothesis draws a store history, a batch (sets, updates, deletes, compare-and-sets over a
few scopes, values large enough that a batch can span a segment roll), where the power goes
out (at a write, fsync, segment roll or directory fsync of the batch's commit, or any later
point with ``hit``) and how (every cut mode, torn writes included). After reopening, the
state is either the state before the batch or the state after all of it, and the log holds
either none of the batch's events or all of them, in order. An acknowledged batch
(``fsync: always``) is always wholly there.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import evstate
from evstate.config import Config
from evstate.testing import CUT_MODES, FaultyIO, PowerCutError, crash

scopes = st.sampled_from(["a", "b", "c"])
keys = st.sampled_from(["k0", "k1", "k2"])
values = st.builds(
    lambda n, pad: {"n": n, "pad": "x" * pad}, st.integers(0, 99), st.integers(0, 900)
)
changes = st.lists(
    st.one_of(
        st.tuples(st.just("set"), scopes, keys, values),
        st.tuples(st.just("update"), scopes, keys, st.integers(-3, 3)),
        st.tuples(st.just("delete"), scopes, keys),
    ),
    min_size=1,
    max_size=12,
)
points = st.sampled_from(
    [
        ("before_append", None),
        ("after_append", None),
        ("before_fsync", "segment"),
        ("after_fsync", "segment"),
        ("segment_roll", None),
        ("before_create", "segment"),
        ("before_fsync_dir", "segment"),
    ]
)


def _open(path: str, io: FaultyIO) -> evstate.Store:
    config = Config().replace(file_path=path, segment_size_bytes=4096, save_interval_ms=3_600_000)
    return evstate.Store(config, io=io)


def _apply(batch: Any, change: tuple[Any, ...]) -> None:
    if change[0] == "set":
        batch.set(change[1], change[2], change[3])
    elif change[0] == "update":
        batch.update(change[1], change[2], [{"type": "increment", "path": "n", "by": change[3]}])
    else:
        batch.delete(change[1], change[2])


def _state(store: evstate.Store) -> dict[str, dict[str, Any]]:
    return {scope: store.list(scope) for scope in store.list_groups()["groups"]}


@given(
    history=changes,
    batch=changes,
    point=points,
    hit=st.integers(1, 3),
    mode=st.sampled_from(CUT_MODES),
    tear=st.none() | st.floats(0.05, 0.95),
)
@settings(
    max_examples=int(__import__("os").environ.get("EVSTATE_MODEL_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_batch_is_all_or_nothing_after_a_cut(
    history: list[tuple[Any, ...]],
    batch: list[tuple[Any, ...]],
    point: tuple[str, str | None],
    hit: int,
    mode: Any,
    tear: float | None,
) -> None:
    directory = tempfile.mkdtemp(prefix="evstate-batchcut-")
    io = FaultyIO(seed=hit)
    try:
        store = _open(directory, io)
        for change in history:  # one ordinary write each
            with store.batch() as single:
                _apply(single, change)
        before, head = _state(store), store.revision
        name, kind = point
        io.crash_at(
            name, kind=kind, hit=hit, mode=mode, tear=tear if name.startswith("before_a") else None
        )
        acknowledged = False
        made: list[evstate.Event] = []
        try:
            with store.batch() as pending:
                for change in batch:
                    _apply(pending, change)
            acknowledged, made = True, pending.events
        except (PowerCutError, evstate.StorageError):
            pass
        event(f"acknowledged={acknowledged}")
        after_memory = _state(store) if acknowledged else None
        crash(store, io, mode)
        io.restart()
        io.clear()
        with _open(directory, io) as reopened:
            state = _state(reopened)
            event(f"survived={reopened.revision != head}")
            if reopened.revision == head:
                assert not acknowledged
                assert state == before
            else:
                assert reopened.revision == head + len(batch), (reopened.revision, head)
                logged = list(reopened.events(head + 1))
                assert [(e.scope, e.key, e.event_type) for e in logged] == [
                    (c[1], c[2], e.event_type) for c, e in zip(batch, logged, strict=True)
                ]
                if acknowledged:
                    assert state == after_memory
                    assert [(e.revision, e.new_value) for e in logged] == [
                        (e.revision, e.new_value) for e in made
                    ]
                for revision in range(head, head + len(batch) + 1):
                    view = reopened.at(revision).revision
                    assert view in (head, head + len(batch))
            assert reopened.verify() == []
    finally:
        shutil.rmtree(directory, ignore_errors=True)
