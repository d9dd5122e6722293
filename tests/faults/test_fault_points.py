"""A power cut, and an I/O error, at every point the file layer and the engine pass.

The workload of :mod:`tests.faults.harness` (writes that roll segments, snapshots,
compaction, a close) is run once to count how often each ``(point, kind)`` is passed; then it
is run again with a fault at chosen passes of each point (every pass with
``EVSTATE_FAULT_EXHAUSTIVE=1``): a power cut (modes ``forget``, ``prefix``, ``zeros`` in
turn), or an ``EIO``. Afterwards the directory must open with every promised write, nothing
that was never written, and a clean ``verify()`` (:func:`harness.check_reopened`).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path

import pytest

import evstate
from evstate.testing import FaultyIO, crash
from tests.faults.harness import (
    Outcome,
    check_reopened,
    fresh_dir,
    open_store,
    run_workload,
    workload,
)

EXHAUSTIVE = os.environ.get("EVSTATE_FAULT_EXHAUSTIVE") == "1"
FSYNC_FLUSH = {"always": 0, "never": 10}  # fsync mode -> flush() every N writes

# Every (point, kind) the workload passes. A new point in the engine shows up in
# test_the_workload_passes_every_point and must be added here (and so gets tested).
_FILE_OPS = ("create", "write", "fsync", "fsync_dir", "rename")
POINTS = sorted(
    {
        *(
            (f"{when}_{op}", kind)
            for when in ("before", "after")
            for op in _FILE_OPS
            for kind in ("segment", "snapshot", "cursor", "index")
            if not (op == "rename" and kind == "segment")
        ),
        *(
            (f"{when}_remove", kind)
            for when in ("before", "after")
            for kind in ("segment", "snapshot", "index")  # index: compaction removes it too
        ),
        # LOCK's pid (a write) and HEAD (written like a cursor file at a clean close)
        *(
            (f"{when}_{op}", "other")
            for when in ("before", "after")
            for op in ("create", "write", "fsync", "fsync_dir", "rename")
        ),
        ("segment_roll", None),
        ("snapshot_write", None),
        ("cursor_save", None),
        ("compaction", None),
    },
    key=str,
)


@functools.cache
def reference(fsync: str) -> Counter[tuple[str, str | None]]:
    """How often the workload (with its final close) passes each point."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        io = FaultyIO(record=True)
        store = open_store(Path(tmp), io, fsync=fsync)
        ops = workload(flush_every=FSYNC_FLUSH[fsync])
        outcome = run_workload(store, ops, Outcome(), io=io, fsync=fsync)
        store.close()
        assert not outcome.errors
        return io.hits.copy()


def chosen_hits(count: int) -> list[int]:
    """Which passes of a point to fault: all of few, else a spread including both ends."""
    if EXHAUSTIVE or count <= 5:
        return list(range(1, count + 1))
    return sorted({1, 2, count // 4, count // 2, 3 * count // 4, count - 1, count})


def faulted_run(path: Path, io: FaultyIO, fsync: str) -> Outcome:
    """Open, run the workload and close under ``io``; returns what happened."""
    outcome = Outcome()
    try:
        store = open_store(path, io, fsync=fsync)
    except evstate.StorageError as exc:
        outcome.errors.append((("open",), exc))
        return outcome
    try:
        run_workload(store, workload(flush_every=FSYNC_FLUSH[fsync]), outcome, io=io, fsync=fsync)
        if io.powered:
            store.close()
    except evstate.StorageError as exc:
        outcome.errors.append((("close",), exc))
    finally:
        crash(store, io)  # cut the power (if not cut yet) and abandon the store
    return outcome


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_the_workload_passes_every_point(fsync: str) -> None:
    assert sorted(reference(fsync), key=str) == POINTS


@pytest.mark.parametrize("fsync", ["always", "never"])
@pytest.mark.parametrize(("point", "kind"), POINTS)
def test_power_cut_at_every_point(tmp_path: Path, point: str, kind: str | None, fsync: str) -> None:
    """A power cut at each pass: promised writes survive, nothing unwritten appears."""
    for hit in chosen_hits(reference(fsync)[(point, kind)]):
        mode = ("forget", "prefix", "zeros")[hit % 3]
        io = FaultyIO(seed=hit)
        io.crash_at(point, kind=kind, hit=hit, mode=mode)
        path = fresh_dir(tmp_path, f"hit{hit}")
        outcome = faulted_run(path, io, fsync)
        assert io.cuts == 1 and io.faults[0].fired == 1, f"pass {hit} of {point} not reached"
        check_reopened(path, outcome)


@pytest.mark.parametrize(("point", "kind"), POINTS)
def test_io_error_at_every_point(tmp_path: Path, point: str, kind: str | None) -> None:
    """EIO at each pass: a clean StorageError, fail closed after a failed fsync, and after a
    later power cut every promised write is still there."""
    for hit in chosen_hits(reference("always")[(point, kind)]):
        io = FaultyIO(seed=hit)
        io.fail_at(point, kind=kind, hit=hit)
        path = fresh_dir(tmp_path, f"hit{hit}")
        outcome = faulted_run(path, io, "always")
        assert io.faults[0].fired == 1, f"pass {hit} of {point} not reached"
        check_reopened(path, outcome)
