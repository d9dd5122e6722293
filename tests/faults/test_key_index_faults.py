"""Faults while key index files are written or removed (docs/format.md section 11).

Index files are written (``.keys.tmp``, fsync, rename, directory fsync) by the roll after
the one that sealed their segment, by a clean close, and removed by compaction. A power cut
at any of those points leaves a directory that opens with every promised write, answers
``history()`` from the log, holds no ``.keys.tmp`` after the open, and whose remaining index
files all check out against their segments. An I/O error there is logged and costs nothing
but the file: the store keeps writing.
"""

from __future__ import annotations

import errno
import functools
from collections import Counter
from pathlib import Path

import pytest

from evstate.backends.file.key_index import read_key_index
from evstate.backends.file.segment import list_segments
from evstate.testing import FaultyIO, crash
from tests.faults.harness import (
    Outcome,
    check_reopened,
    fresh_dir,
    open_store,
    run_workload,
    workload,
)

WRITE_POINTS = [
    f"{when}_{op}"
    for op in ("create", "write", "fsync", "rename", "fsync_dir")
    for when in ("before", "after")
]
REMOVE_POINTS = ["before_remove", "after_remove"]


@functools.cache
def passes() -> Counter[tuple[str, str | None]]:
    """How often the workload (with its close) passes each point."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        io = FaultyIO()
        store = open_store(Path(tmp), io)
        outcome = run_workload(store, workload(), Outcome(), io=io)
        store.close()
        assert not outcome.errors
        return io.hits.copy()


def run(path: Path, io: FaultyIO) -> Outcome:
    outcome = Outcome()
    store = open_store(path, io)
    try:
        run_workload(store, workload(), outcome, io=io)
        if io.powered:
            store.close()
    finally:
        crash(store, io)
    return outcome


def check_index_files(path: Path) -> None:
    """No unfinished index file is left, and every index file describes its segment."""
    assert not list(path.glob("*.keys.tmp"))
    segments = list_segments(str(path), FaultyIO())
    for i, (first, segment) in enumerate(segments):
        following = segments[i + 1][0] if i + 1 < len(segments) else None
        read_key_index(segment, first, next_first=following)  # raises if it does not
    assert {p.stem for p in path.glob("*.keys")} <= {p.stem for p in path.glob("*.log")}


def test_the_workload_writes_and_removes_index_files() -> None:
    counts = passes()
    assert all(counts[(point, "index")] >= 3 for point in WRITE_POINTS)
    assert all(counts[(point, "index")] >= 3 for point in REMOVE_POINTS)


@pytest.mark.parametrize("point", WRITE_POINTS + REMOVE_POINTS)
def test_a_power_cut_at_each_point_of_an_index_file(tmp_path: Path, point: str) -> None:
    count = passes()[(point, "index")]
    for hit in sorted({1, 2, count // 2, count}):
        mode = ("forget", "prefix", "zeros")[hit % 3]
        io = FaultyIO(seed=hit)
        io.crash_at(point, kind="index", hit=hit, mode=mode)
        path = fresh_dir(tmp_path, f"hit{hit}")
        outcome = run(path, io)
        assert io.cuts == 1, f"pass {hit} of {point} not reached"
        check_reopened(path, outcome)  # opens, checks history() against the model
        check_index_files(path)


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("point", WRITE_POINTS)
def test_an_error_writing_an_index_file_costs_only_that_file(
    tmp_path: Path, point: str, error: int
) -> None:
    io = FaultyIO()
    fault = io.fail_at(point, kind="index", error=error, hit=2, times=None)
    outcome = run(tmp_path, io)
    assert fault.fired >= 1
    assert not outcome.errors, outcome.errors  # no write, snapshot or compaction failed
    assert not list(tmp_path.glob("*.keys.tmp"))
    check_reopened(tmp_path, outcome)
    check_index_files(tmp_path)


def test_a_torn_index_file_write_on_a_full_disk_gives_its_space_back(tmp_path: Path) -> None:
    io = FaultyIO()
    io.fail_at("before_write", kind="index", error=errno.ENOSPC, tear=0.5, times=None)
    outcome = run(tmp_path, io)
    assert not outcome.errors
    assert not list(tmp_path.glob("*.keys*"))  # every attempt failed, none was left
    check_reopened(tmp_path, outcome)


@pytest.mark.parametrize("point", REMOVE_POINTS)
def test_an_error_removing_an_index_file_fails_that_compaction_only(
    tmp_path: Path, point: str
) -> None:
    """Compaction removes a segment's index file first; if that fails, the compaction fails
    cleanly (StorageError) before any segment is deleted, and the next one catches up."""
    io = FaultyIO()
    io.fail_at(point, kind="index", hit=2)
    outcome = run(tmp_path, io)
    assert [op for op, _ in outcome.errors] == [("compact",)]
    check_reopened(tmp_path, outcome)
    check_index_files(tmp_path)
