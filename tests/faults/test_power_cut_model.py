"""Model-based test: random operations, power cuts and reopens, checked against a model.

A Hypothesis state machine drives a file store (``fsync: always``, small segments, a short
retention) through set / update / delete / snapshot / compact, trigger registration and
unregistration, clean reopens, power cuts while idle, and power cuts at a named point in
the middle of a write, a snapshot, a compaction, a cursor checkpoint or a trigger's batch
commit (every cut mode, including a process crash). It keeps a model log of every event
and checks after each step:

- state: the store's state equals the model log replayed; ``at()`` (any revision from the
  horizon on) and ``history()`` agree with it;
- after a power cut: every acknowledged write is present, nothing unwritten appears (the
  recovered log is a prefix of the model log), the store opens;
- triggers: each trigger's deliveries are in revision order and gap-free within a run, none
  is lost (after catching up, every matching event from its start on was delivered, across
  cuts: at-least-once), and each delivered event is exactly the logged one and was durable
  when delivered (a cut never takes back a delivered event);
- exactly-once inside the store: a counter trigger writing through ``event.store`` counts
  every event of scope ``a`` exactly once, however the cuts fall.

Triggers are paused while an operation runs and caught up after it, so the interleaving of
the counter's batch records with the operations is deterministic.

Budget: ``EVSTATE_MODEL_EXAMPLES`` (default 50) runs of ``EVSTATE_MODEL_STEPS`` (default 50)
steps. A failure prints the falsifying steps and a ``@reproduce_failure`` blob; replay a
whole run with ``pytest --hypothesis-seed=N``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import evstate
from evstate import UpdateOp
from evstate.config import Config
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from evstate.testing import CUT_MODES, FaultyIO, crash

EXAMPLES = int(os.environ.get("EVSTATE_MODEL_EXAMPLES", "50"))
STEPS = int(os.environ.get("EVSTATE_MODEL_STEPS", "50"))
TIMEOUT = 30.0

Entry = tuple[str, str, str, Any]  # scope, key, event_type, new value (None for deleted)

scopes = st.sampled_from(["a", "b"])
keys = st.sampled_from(["k0", "k1", "k2", "k3"])
leaves = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6)
values = st.builds(
    lambda v, pad: {"v": v, "pad": "x" * pad},
    st.recursive(leaves, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
    st.integers(0, 400),
)
ops = st.lists(
    st.one_of(
        st.builds(lambda by: {"type": "increment", "path": "n", "by": by}, st.integers(-3, 3)),
        st.builds(lambda v: {"type": "set", "path": "v", "value": v}, leaves),
        st.just({"type": "remove", "path": "pad"}),
        st.builds(lambda v: {"type": "append", "path": "l", "value": v}, leaves),
    ),
    min_size=1,
    max_size=3,
)
CRASH_POINTS = [
    ("before_append", None),
    ("after_append", None),
    ("before_fsync", "segment"),
    ("after_fsync", "segment"),
    ("segment_roll", None),
    ("before_create", "segment"),
    ("before_fsync_dir", "segment"),
    ("snapshot_write", None),
    ("before_write", "snapshot"),
    ("before_fsync", "snapshot"),
    ("before_rename", "snapshot"),
    ("after_rename", "snapshot"),
    ("before_fsync_dir", "snapshot"),
    ("compaction", None),
    ("before_remove", "segment"),
    ("before_remove", "snapshot"),
    ("cursor_save", None),
    ("before_write", "cursor"),
    ("before_rename", "cursor"),
    ("before_fsync_dir", "cursor"),
]
TRIGGERS = {"t_all": None, "t_b": "b"}  # external triggers: name -> scope filter


def count(event: Any) -> None:
    event.store.update("out", "n", [UpdateOp.increment("n", 1)])


class PowerCutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="evstate-powercut-")
        self.io = FaultyIO(seed=0)
        self.log: list[Entry] = []  # the model log: entry i is revision i + 1
        self.state: dict[str, dict[str, Any]] = {}
        self.promised = 0  # every revision up to this one was acknowledged (durable)
        self.maybe: Entry | None = None  # a write that failed after reaching the page cache
        self.registered: set[str] = set()
        self.start: dict[str, int] = {}  # trigger -> cursor it started from
        self.sessions: dict[str, list[list[Entry | Any]]] = {name: [] for name in TRIGGERS}
        self.store = self._open()

    # ---- plumbing -----------------------------------------------------------------------

    def _open(self) -> evstate.Store:
        config = Config().replace(
            file_path=self.dir,
            segment_size_bytes=4096,
            save_interval_ms=3_600_000,
            retention={"revisions": 8},
        )
        store = evstate.Store(config, io=self.io)
        store.triggers_enabled = False
        store.trigger("count", count, scope="a", start="earliest")
        return store

    def _handler(self, name: str) -> Any:
        session = self.sessions[name][-1]

        def handler(event: Any) -> None:
            session.append(
                (event.revision, event.scope, event.key, event.event_type, event.new_value)
            )

        return handler

    def _register(self, name: str) -> None:
        self.sessions[name].append([])
        try:
            self.store.trigger(name, self._handler(name), scope=TRIGGERS[name], start="earliest")
        except evstate.HistoryCompactedError:
            # Unregistered triggers do not pin history (docs/triggers.md section 7): its cursor
            # fell behind the horizon. Start it over.
            status = self.store.trigger_status()[name]
            assert status["cursor"] < self.store.stats()["oldest_revision"] - 1
            self.store.delete_trigger(name)
            self.start.pop(name, None)
            self.sessions[name] = [[]]
            self.store.trigger(name, self._handler(name), scope=TRIGGERS[name], start="earliest")
        self.start.setdefault(name, self.store.trigger_status()[name]["cursor"])
        self.registered.add(name)

    def _append(self, scope: str, key: str, kind: str, value: Any) -> None:
        keys_ = self.state.setdefault(scope, {})
        if kind == "deleted":
            keys_.pop(key, None)
        else:
            keys_[key] = copy.deepcopy(value)
        if not keys_:
            del self.state[scope]
        self.log.append((scope, key, kind, copy.deepcopy(value)))

    def _entry(self, op: tuple[Any, ...]) -> Entry:
        """The event a write operation makes on the model state now."""
        kind, scope, key = op[0], op[1], op[2]
        exists = key in self.state.get(scope, {})
        if kind == "set":
            return (scope, key, "updated" if exists else "created", op[3])
        if kind == "update":
            current = copy.deepcopy(self.state[scope][key]) if exists else {}
            new = apply_update_ops(current, parse_ops(op[3]), missing=not exists)[0]
            return (scope, key, "updated" if exists else "created", new)
        return (scope, key, "deleted", None)

    def _write(self, op: tuple[Any, ...]) -> None:
        """Run a write; model it if it got a revision; note if it was acknowledged."""
        before = self.store.revision
        entry = self._entry(op)
        self.maybe = None
        try:
            if op[0] == "set":
                self.store.set(op[1], op[2], op[3])
            elif op[0] == "update":
                self.store.update(op[1], op[2], op[3])
            else:
                self.store.delete(op[1], op[2])
            acknowledged = True
        except evstate.StorageError:
            acknowledged = False
        after = self.store.revision
        assert after in (before, before + 1)
        if after == before + 1:
            self._append(*entry)
        elif not acknowledged:
            self.maybe = entry  # its bytes may have reached the file before the failure
        if acknowledged:
            assert after == before + 1
            self.promised = after

    def _absorb(self) -> None:
        """Take the counter's batch records (beyond the model log) into the model."""
        for event in self.store.events(len(self.log) + 1):
            assert (event.scope, event.key) == ("out", "n"), f"unexpected event {event}"
            old = self.state.get("out", {}).get("n")
            expected = {"n": (old or {}).get("n", 0) + 1}
            assert event.new_value == expected, (event, old)
            self._append("out", "n", "updated" if old is not None else "created", expected)

    def _catch_up(self) -> None:
        """Let every trigger reach the head (repeatedly: the counter writes), then pause."""
        self.store.triggers_enabled = True
        deadline = time.monotonic() + TIMEOUT
        while True:
            head = self.store.revision
            self.store.wait_for_triggers(head, timeout=TIMEOUT)
            if self.store.revision == head:
                break
            assert time.monotonic() < deadline
        self.store.triggers_enabled = False
        self._absorb()
        self.promised = max(self.promised, self.store.revision)

    def _replay(self, revision: int) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}
        for scope, key, kind, value in self.log[:revision]:
            if kind == "deleted":
                state.get(scope, {}).pop(key, None)
            else:
                state.setdefault(scope, {})[key] = value
        return {s: dict(sorted(k.items())) for s, k in sorted(state.items()) if k}

    def _after_cut(self) -> None:
        """The power went out: abandon the store, reopen, check what survived."""
        crash(self.store, self.io)
        self.io.restart()
        self.io.clear()
        self.store = self._open()
        revision = self.store.revision
        if revision > len(self.log) and self.maybe is not None:
            event = next(self.store.events(len(self.log) + 1, len(self.log) + 1))
            if (event.scope, event.key, event.event_type, event.new_value) == self.maybe:
                self._append(*self.maybe)  # a failed write whose record survived: allowed
        self.maybe = None
        if revision > len(self.log):
            self._absorb()  # a counter batch that became durable just before the cut
        assert self.promised <= revision <= len(self.log), (self.promised, revision)
        del self.log[revision:]
        self.state = self._replay(revision)
        for name in TRIGGERS:  # a delivered event was durable: no cut takes it back
            for session in self.sessions[name]:
                assert all(d[0] <= revision for d in session), (name, revision, session)
        self.promised = revision  # what recovery serves is durable (it fsyncs at open)
        for name in sorted(self.registered):
            self._register(name)
        self._catch_up()
        self._check_triggers()

    def _check_triggers(self) -> None:
        head = self.store.revision
        count_a = sum(1 for scope, *_ in self.log if scope == "a")
        assert (self.store.get("out", "n") or {"n": 0}) == {"n": count_a}  # exactly once
        for name, scope in TRIGGERS.items():
            if name not in self.start:
                continue
            start = self.start[name]
            matching = [
                r
                for r in range(start + 1, head + 1)
                if scope is None or self.log[r - 1][0] == scope
            ]
            delivered: set[int] = set()
            for session in self.sessions[name]:
                revisions = [d[0] for d in session]
                assert revisions == sorted(set(revisions)), (name, revisions)  # in order
                for d in session:
                    assert d[0] > start
                    assert d[1:] == self.log[d[0] - 1], (name, d, self.log[d[0] - 1])
                if revisions:  # gap-free within a run
                    first = matching.index(revisions[0]) if revisions[0] in matching else None
                    assert first is not None, (name, revisions[0])
                    assert revisions == matching[first : first + len(revisions)], name
                delivered.update(revisions)
            if name in self.registered:  # none lost: at least once
                assert set(matching) <= delivered, (name, sorted(set(matching) - delivered))

    # ---- rules ------------------------------------------------------------------------

    @rule(scope=scopes, key=keys, value=values)
    def set(self, scope: str, key: str, value: Any) -> None:
        self._write(("set", scope, key, value))
        self._catch_up()

    @rule(scope=scopes, key=keys, raw_ops=ops)
    def update(self, scope: str, key: str, raw_ops: list[dict[str, Any]]) -> None:
        self._write(("update", scope, key, raw_ops))
        self._catch_up()

    @rule(scope=scopes, key=keys)
    def delete(self, scope: str, key: str) -> None:
        self._write(("delete", scope, key))
        self._catch_up()

    @rule()
    def snapshot(self) -> None:
        assert self.store.snapshot() == self.store.revision

    @rule()
    def compact(self) -> None:
        result = self.store.compact()
        assert result["horizon_revision"] <= max(0, self.store.revision - 8)

    @rule(name=st.sampled_from(sorted(TRIGGERS)))
    def register(self, name: str) -> None:
        if name not in self.registered:
            self._register(name)
            self._catch_up()
            self._check_triggers()

    @rule(name=st.sampled_from(sorted(TRIGGERS)))
    def unregister(self, name: str) -> None:
        self.store.unregister_trigger(name)
        self.registered.discard(name)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        assert self.store.revision == len(self.log)
        for name in sorted(self.registered):
            self._register(name)
        self._catch_up()
        self._check_triggers()

    @rule(mode=st.sampled_from(CUT_MODES), seed=st.integers(0, 2**16))
    def power_cut(self, mode: str, seed: int) -> None:
        self.io.rng.seed(seed)
        self.io.power_cut(mode)  # type: ignore[arg-type]
        self._after_cut()

    @rule(
        op=st.sampled_from(["write_a", "write_b", "snapshot", "compact", "checkpoint", "batch"]),
        where=st.sampled_from(CRASH_POINTS),
        hit=st.integers(1, 3),
        mode=st.sampled_from(CUT_MODES),
        seed=st.integers(0, 2**16),
        value=values,
    )
    def crash_during(
        self, op: str, where: tuple[str, str | None], hit: int, mode: str, seed: int, value: Any
    ) -> None:
        """Cut the power at the ``hit``-th pass of a point while ``op`` runs."""
        self.io.rng.seed(seed)
        if op == "batch":  # an event of scope a, then the counter's batch commit
            self._write(("set", "a", "k0", value))
        self.io.crash_at(where[0], kind=where[1], hit=hit, mode=mode)  # type: ignore[arg-type]
        try:
            if op in ("write_a", "write_b"):
                self._write(("set", op[-1], "k1", value))
            elif op == "snapshot":
                self.store.snapshot()
            elif op == "compact":
                self.store.compact()
            elif op == "checkpoint":
                self.store._cursors.dirty = True
                self.store._cursors.checkpoint()
            else:  # let the counter commit its batch for the event of scope a
                target = self.store.revision
                self.store.triggers_enabled = True
                deadline = time.monotonic() + 5
                while self.io.powered and time.monotonic() < deadline:
                    if self.store.trigger_status()["count"]["cursor"] >= target:
                        break
                    time.sleep(0.002)
        except evstate.StorageError:
            pass
        if not self.io.powered:
            self._after_cut()
        else:
            self.io.clear()
            self._catch_up()

    @rule(fraction=st.floats(0, 1))
    def check_history(self, fraction: float) -> None:
        stats = self.store.stats()
        horizon, head = stats["horizon_revision"], self.store.revision
        target = horizon + round((head - horizon) * fraction)
        view = self.store.at(target)
        got = {s: view.list(s) for s in view.list_groups()["groups"]}
        assert got == self._replay(target), target
        if horizon > 0:
            try:
                self.store.at(horizon - 1)
                raise AssertionError("at() before the horizon answered")
            except evstate.HistoryCompactedError:
                pass
        oldest = stats["oldest_revision"]
        for scope in ("a", "b"):
            for key in ("k0", "k1"):
                expected = [
                    r + 1
                    for r, entry in enumerate(self.log)
                    if entry[:2] == (scope, key) and r + 1 >= oldest
                ]
                got_history = self.store.history(scope, key, since=oldest)
                assert [e.revision for e in got_history] == expected
                for event in got_history:
                    assert event.new_value == self.log[event.revision - 1][3]

    # ---- invariants ---------------------------------------------------------------------

    @invariant()
    def state_agrees_with_the_model(self) -> None:
        assert self.store.revision == len(self.log)
        got = {s: self.store.list(s) for s in self.store.list_groups()["groups"]}
        assert got == self._replay(len(self.log))

    def teardown(self) -> None:
        try:
            if self.io.powered:
                assert self.store.verify() == []
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


TestPowerCutModel = PowerCutMachine.TestCase
TestPowerCutModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
