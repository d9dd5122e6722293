"""Shared pieces of the fault tests: a deterministic workload, its model, and the checks.

A workload is a list of operations run one at a time in the test thread. Each write's
outcome is recorded: whether it got a revision (``store.revision`` moved) and whether it was
acknowledged (returned). The model log is the applied operations in revision order, so the
state of every revision is known. After a fault, the promises checked by
:func:`check_reopened` are the ones of docs/reliability.md.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.config import Config
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops

Op = tuple[Any, ...]
State = dict[str, dict[str, Any]]

# Rolls a 4 KiB segment every ~15 records; a snapshot (and compaction) every 30 operations.
RETENTION = {"revisions": 30}


def open_store(path: Path, io: DiskIO | None = None, **options: Any) -> evstate.Store:
    """A file store in ``path`` with small segments and no background snapshots."""
    base: dict[str, Any] = {
        "file_path": str(path),
        "segment_size_bytes": 4096,
        "save_interval_ms": 3_600_000,
        "retention": RETENTION,
    }
    base.update(options)
    return evstate.Store(Config().replace(**base), io=io)


def workload(n: int = 90, *, seed: int = 0, flush_every: int = 0) -> list[Op]:
    """A fixed mix of set/update/delete with snapshots, compactions and (optional) flushes."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(1, n + 1):
        scope = rng.choice(["a", "b"])
        key = f"k{rng.randrange(12)}"
        roll = rng.random()
        if roll < 0.6:
            ops.append(("set", scope, key, {"i": i, "pad": "x" * rng.randrange(20, 240)}))
        elif roll < 0.85:
            ops.append(("update", scope, key, [{"type": "increment", "path": "n", "by": i}]))
        else:
            ops.append(("delete", scope, key))
        if flush_every and i % flush_every == 0:
            ops.append(("flush",))
        if i % 30 == 0:
            ops.append(("snapshot",))
            ops.append(("compact",))
    return ops


def apply_op(state: State, op: Op) -> None:
    """Apply a write operation to a model state (the iii rules, via evstate.ops)."""
    kind, scope, key = op[0], op[1], op[2]
    keys = state.setdefault(scope, {})
    if kind == "set":
        keys[key] = copy.deepcopy(op[3])
    elif kind == "update":
        missing = key not in keys
        current = {} if missing else copy.deepcopy(keys[key])
        keys[key] = apply_update_ops(current, parse_ops(op[3]), missing=missing)[0]
    else:
        keys.pop(key, None)
    if not keys:
        del state[scope]


def run_op(store: evstate.Store, op: Op) -> None:
    """Perform one operation on the store."""
    kind = op[0]
    if kind == "set":
        store.set(op[1], op[2], op[3])
    elif kind == "update":
        store.update(op[1], op[2], op[3])
    elif kind == "delete":
        store.delete(op[1], op[2])
    elif kind == "flush":
        store.flush()
    elif kind == "snapshot":
        store.snapshot()
    elif kind == "compact":
        store.compact()
    else:
        raise AssertionError(f"unknown op {op}")


@dataclass
class Outcome:
    """What a workload did: the model log and what was promised durable."""

    applied: list[Op] = field(default_factory=list)  # writes that got a revision, in order
    promised: int = 0  # every revision up to this one was promised durable
    errors: list[tuple[Op, BaseException]] = field(default_factory=list)
    failed_closed: bool = False

    def states(self) -> list[State]:
        """The model state after each revision (index = revision)."""
        state: State = {}
        result = [copy.deepcopy(state)]
        for op in self.applied:
            apply_op(state, op)
            result.append(copy.deepcopy(state))
        return result


def run_workload(
    store: evstate.Store, ops: list[Op], outcome: Outcome, *, io: Any = None, fsync: str = "always"
) -> Outcome:
    """Run ``ops``, recording into ``outcome``; stops when the power goes out.

    Checks on the way: a failed operation raises a ``StorageError`` (never a bare
    ``OSError``, not even for the simulated power cut); after a failed fsync
    (``StoreFailedError``) no write and no flush is ever acknowledged again (fail closed,
    never retry-and-acknowledge).
    """
    for op in ops:
        before = store.revision
        try:
            run_op(store, op)
        except OSError as exc:
            assert isinstance(exc, evstate.StorageError), f"{op[0]}: bare {exc!r}"
            outcome.errors.append((op, exc))
            if isinstance(exc, evstate.StoreFailedError):
                outcome.failed_closed = True
            ok = False
        else:
            ok = True
            if outcome.failed_closed and op[0] in ("set", "update", "delete", "flush"):
                raise AssertionError(f"{op[0]} acknowledged after a failed fsync")
        after = store.revision
        assert after in (before, before + 1), (before, after)
        if after == before + 1:
            assert op[0] in ("set", "update", "delete"), op
            outcome.applied.append(op)
        elif ok:
            assert op[0] not in ("set", "update", "delete"), f"{op} returned without a revision"
        write = op[0] in ("set", "update", "delete")
        if ok and ((fsync == "always" and write) or op[0] == "flush"):
            outcome.promised = store.revision
        if io is not None and not io.powered:
            break
    return outcome


def store_state(store: evstate.Store | evstate.StateView) -> State:
    """The whole state of a store or view as a plain dict."""
    return {scope: store.list(scope) for scope in store.list_groups()["groups"]}


def model_state(state: State) -> State:
    """A model state in the shape :func:`store_state` returns (keys sorted)."""
    return {scope: dict(sorted(keys.items())) for scope, keys in sorted(state.items()) if keys}


def check_reopened(path: Path, outcome: Outcome, *, ops_for_history: bool = True) -> int:
    """Reopen ``path`` with a plain DiskIO and check the promises; returns the revision.

    - the store opens;
    - every promised revision is present, nothing beyond the last applied write appears;
    - the state is exactly the model state of the recovered revision (a prefix of the log:
      nothing that was never written, no hole);
    - ``verify()`` is clean; ``at()`` and ``history()`` agree with the model from the horizon;
    - the store takes a write, which survives another reopen.
    """
    states = outcome.states()
    with open_store(path) as store:
        revision = store.revision
        assert outcome.promised <= revision <= len(outcome.applied), (
            f"recovered revision {revision}, promised {outcome.promised}, "
            f"written {len(outcome.applied)}; notes: {store.recovery_notes}"
        )
        assert store_state(store) == model_state(states[revision])
        assert store.verify() == []
        horizon = store.stats()["horizon_revision"]
        for past in sorted({horizon, (horizon + revision) // 2, revision}):
            assert store_state(store.at(past)) == model_state(states[past]), past
        if ops_for_history:
            oldest = store.stats()["oldest_revision"]
            for scope, key in {(op[1], op[2]) for op in outcome.applied[:revision]}:
                expected = [
                    rev + 1
                    for rev, op in enumerate(outcome.applied[:revision])
                    if (op[1], op[2]) == (scope, key) and rev + 1 >= oldest
                ]
                got = [e.revision for e in store.history(scope, key, since=oldest)]
                assert got == expected, (scope, key)
        store.set("after", "reopen", revision)
    with open_store(path) as store:
        assert store.revision == revision + 1
        assert store.get("after", "reopen") == revision
    return revision


def fresh_dir(base: Path, name: str) -> Path:
    path = base / name
    os.makedirs(path)
    return path
