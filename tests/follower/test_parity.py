"""A follower answers exactly what its owner answers: history, at(), events, verify, stats.

Both read the directory through the same log source (the file timeline), so these tests
pin that down against the cases that once made them disagree: snapshots, compaction, and
an orphan snapshot (one compaction deleted, put back, as a crash between compaction's
segment and snapshot deletions leaves it).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import evstate
from evstate.backends.file.layout import snapshot_name

SMALL = {"segment_size_bytes": 4096, "save_interval_ms": 3_600_000}


def _answer(fn: Any) -> Any:
    """What a call answers: its value, or the kind and horizon of the error it raises."""
    try:
        return ("ok", fn())
    except evstate.HistoryCompactedError as exc:
        return ("compacted", exc.horizon)


def _view(store: Any, revision: int) -> Any:
    return _answer(lambda: {s: store.at(revision).list(s) for s in ("a", "b")})


def _same(owner: evstate.Store, follower: evstate.Follower, *, healthy: bool = True) -> None:
    assert follower.refresh() == owner.revision
    head = owner.revision
    for scope in ("a", "b"):
        assert follower.list(scope) == owner.list(scope)
        for key in ("k0", "k1", "k2"):
            assert follower.history(scope, key) == owner.history(scope, key)
            for since in (0, 1, head // 2):
                mine = _answer(partial(owner.history, scope, key, since=since))
                assert _answer(partial(follower.history, scope, key, since=since)) == mine
    horizon = owner.stats()["horizon_revision"]
    for revision in sorted({0, 1, max(horizon - 1, 0), horizon, (horizon + head) // 2, head}):
        assert _view(follower, revision) == _view(owner, revision)
    assert _answer(lambda: list(follower.events())) == _answer(lambda: list(owner.events()))
    mine, theirs = owner.stats(), follower.stats()
    for name in ("revision", "oldest_revision", "horizon_revision", "keys", "scopes"):
        assert theirs[name] == mine[name], name
    problems = owner.verify()
    assert follower.verify() == problems
    assert (problems == []) is healthy


def _write_rounds(store: evstate.Store, rounds: int, per_round: int = 60) -> list[int]:
    snapshots = []
    for r in range(rounds):
        for i in range(per_round):
            store.set("a", f"k{i % 3}", {"r": r, "i": i, "pad": "x" * 100})
        snapshots.append(store.snapshot())
        store.compact()
    return snapshots


def test_an_orphan_snapshot_is_no_starting_point_for_owner_or_follower(tmp_path: Path) -> None:
    """Bug: a follower rebuilt at() from an orphan snapshot (older than the oldest retained
    segment) and labelled its state with a later revision; its verify() then reported a
    false mismatch. The owner refused; now both read through one timeline and agree."""
    with evstate.open(tmp_path, retention={"revisions": 20}, **SMALL) as owner:
        snapshots = _write_rounds(owner, 2)
        orphan = snapshots[0]
        path = tmp_path / snapshot_name(orphan)
        image = path.read_bytes()
        _write_rounds(owner, 2)
        assert not path.exists()  # compaction deleted it
        path.write_bytes(image)  # ... and a crash (or a person) put it back
        with pytest.raises(evstate.HistoryCompactedError) as owner_error:
            owner.at(orphan + 5)
        with evstate.follow(tmp_path, live=False) as follower:
            with pytest.raises(evstate.HistoryCompactedError) as follower_error:
                follower.at(orphan + 5)
            assert follower_error.value.horizon == owner_error.value.horizon
            _same(owner, follower)


def test_a_snapshot_whose_name_disagrees_with_its_header_is_not_trusted(tmp_path: Path) -> None:
    """Bug: renaming ...200.snap to ...150.snap made at(160) answer with 200's state, and
    verify said ok. The name is now checked against the header, as segments are."""
    with evstate.open(tmp_path, retention="forever", **SMALL) as owner:
        first, second = _write_rounds(owner, 2)
        true_state = owner.at(first + 15).list("a")
        os.replace(tmp_path / snapshot_name(second), tmp_path / snapshot_name(first + 10))
        with evstate.follow(tmp_path, live=False) as follower:
            _same(owner, follower, healthy=False)
            assert "the header says revision" in " ".join(owner.verify())
            assert owner.at(first + 15).list("a") == true_state
            assert follower.at(first + 15).list("a") == true_state


class OwnerFollowerParity(RuleBasedStateMachine):
    """Writes, snapshots, compaction and orphans, in any order: the answers stay equal."""

    def __init__(self) -> None:
        super().__init__()
        self.owner: evstate.Store | None = None
        self.follower: evstate.Follower | None = None
        self.removed: list[tuple[Path, bytes]] = []

    @initialize(data=st.data())
    def open(self, data: st.DataObject) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="parity-"))
        keep = data.draw(st.sampled_from([10, 40, 200]))
        self.owner = evstate.open(self.dir, retention={"revisions": keep}, **SMALL)
        self.follower = evstate.follow(self.dir, live=False)

    @rule(
        scope=st.sampled_from(["a", "b"]),
        key=st.sampled_from(["k0", "k1", "k2"]),
        n=st.integers(1, 40),
    )
    def write(self, scope: str, key: str, n: int) -> None:
        assert self.owner is not None
        for i in range(n):
            if i % 9 == 8:
                self.owner.delete(scope, key)
            else:
                self.owner.set(scope, key, {"i": i, "pad": "y" * 120})

    @rule()
    def snapshot(self) -> None:
        assert self.owner is not None
        revision = self.owner.snapshot()
        path = self.dir / snapshot_name(revision)
        if path.exists():
            self.removed.append((path, path.read_bytes()))

    @rule()
    def compact(self) -> None:
        assert self.owner is not None
        self.owner.compact()

    @rule()
    def put_back_an_orphan(self) -> None:
        for path, image in self.removed:
            if not path.exists():
                path.write_bytes(image)
                return

    @invariant()
    def answers_agree(self) -> None:
        if self.owner is not None and self.follower is not None:
            _same(self.owner, self.follower)

    def teardown(self) -> None:
        if self.follower is not None:
            self.follower.close()
        if self.owner is not None:
            self.owner.close()


OwnerFollowerParity.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_owner_follower_parity = OwnerFollowerParity.TestCase
