"""Key index files (docs/format.md section 11): history() after a reopen reads them, not the log.

The recovery rules of the files (damaged, foreign, stray, partial) are tested one by one in
``test_key_index_rules.py``; faults while writing them in
``tests/faults/test_key_index_faults.py``.
"""

from __future__ import annotations

import itertools
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.index import LogIndex, scan_records
from evstate.backends.file.key_index import KeyIndexError, read_key_index
from evstate.backends.file.layout import KEY_INDEX_ENTRY_BYTES, KEY_INDEX_HEADER
from evstate.backends.file.timeline import FileTimeline

DOC = (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()
SMALL = {"segment_size_bytes": 4096, "save_interval_ms": 3_600_000}


def fill(path: Path, n: int = 400, keys: int = 20, **options: Any) -> dict[str, list[int]]:
    """Write ``n`` events over ``keys`` keys of scope ``s``, close; returns each key's
    revisions."""
    written: dict[str, list[int]] = {}
    with evstate.open(path, **{**SMALL, **options}) as store:
        for i in range(n):
            key = f"k{i * 7 % keys}"
            store.set("s", key, {"i": i, "pad": "x" * (i % 40)})
            written.setdefault(key, []).append(store.revision)
    return written


def timeline(path: Path) -> FileTimeline:
    """A reader over a closed store directory (as a follower reads its owner's files)."""
    head = max(
        (r.revision for seg in sorted(path.glob("*.log")) for _, r in scan_records(str(seg))),
        default=0,
    )
    return FileTimeline(str(path), DiskIO(), threading.Lock(), lambda: head)


def history(path: Path, key: str) -> list[tuple[int, Any]]:
    with evstate.open(path, **SMALL) as store:
        return [(e.revision, e.new_value) for e in store.history("s", key)]


def stems(path: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in path.glob("*" + suffix)}


# ---- history() after a reopen ------------------------------------------------------------


def test_every_segment_has_an_index_file_after_a_clean_close(tmp_path: Path) -> None:
    fill(tmp_path)
    assert len(stems(tmp_path, ".log")) > 5
    assert stems(tmp_path, ".keys") == stems(tmp_path, ".log")
    assert not list(tmp_path.glob("*.tmp"))


def test_history_after_reopen_reads_no_record_of_the_log(tmp_path: Path) -> None:
    """The index is built from the key index files alone: no segment byte is scanned."""
    written = fill(tmp_path)
    reader = timeline(tmp_path)
    index = reader.index()
    assert index.loaded_files == len(stems(tmp_path, ".log"))
    assert index.scanned_bytes == 0
    for key, revisions in written.items():
        assert [r.revision for r in reader.key_records("s", key, 1, 400)] == revisions


def test_history_after_reopen_reads_only_that_keys_records(tmp_path: Path) -> None:
    """Damage a record of another key in a sealed segment the open does not read (a snapshot
    covers it): history() of a key still answers, so nothing read that record, while a full
    scan (events()) reports the damage."""
    with evstate.open(tmp_path, **SMALL) as store:
        for i in range(200):
            store.set("s", "target" if i % 10 == 0 else f"other{i}", {"i": i, "pad": "y" * 30})
        store.snapshot()
        store.set("s", "target", "after")
    sealed = sorted(tmp_path.glob("*.log"))[1]
    offset, victim = next(
        (offset, record)
        for offset, record in scan_records(str(sealed))
        if record.key != "target" and offset + 200 < sealed.stat().st_size
    )
    data = bytearray(sealed.read_bytes())
    data[offset + 20] ^= 0xFF  # inside another key's record, not the segment's last one
    sealed.write_bytes(bytes(data))
    with evstate.open(tmp_path, **SMALL) as store:
        events = store.history("s", "target")
        assert [e.new_value for e in events][-1] == "after"
        assert [e.revision for e in events] == [*range(1, 201, 10), 201]
        with pytest.raises(evstate.CorruptionError):
            list(store.events())
        with pytest.raises(evstate.CorruptionError):
            store.history("s", victim.key)


def test_the_open_segment_is_indexed_at_a_clean_close_and_extended_at_the_next(
    tmp_path: Path,
) -> None:
    options = {"segment_size_bytes": 1 << 20}
    written = fill(tmp_path, 300, **options)
    [segment] = list(tmp_path.glob("*.log"))
    table = read_key_index(str(segment), 1, next_first=None)
    assert table is not None and table.covered_size == segment.stat().st_size
    with evstate.open(tmp_path, **options) as store:
        for i in range(50):
            store.set("s", "k3", i)
            written["k3"].append(store.revision)
    table = read_key_index(str(segment), 1, next_first=None)
    assert table is not None and table.records == 350
    assert table.covered_size == segment.stat().st_size
    reader = timeline(tmp_path)
    assert reader.index().scanned_bytes == 0
    assert [r.revision for r in reader.key_records("s", "k3", 1, 350)] == written["k3"]


def test_records_written_after_the_index_file_are_read_from_the_segment(tmp_path: Path) -> None:
    """A writer that did not close cleanly leaves records after the index of its open
    segment: they are read from the segment, and only they."""
    options = {"segment_size_bytes": 1 << 20}
    written = fill(tmp_path, 100, **options)
    [segment] = list(tmp_path.glob("*.log"))
    covered = segment.stat().st_size
    crashed = tmp_path / "crashed"
    with evstate.open(tmp_path, **options) as store:
        for i in range(30):
            store.set("s", "k1", i)
            written["k1"].append(store.revision)
        store.flush()
        shutil.copytree(tmp_path, crashed, ignore=shutil.ignore_patterns("LOCK", "crashed"))
    reader = timeline(crashed)
    assert reader.index().scanned_bytes == segment.stat().st_size - covered
    assert [r.revision for r in reader.key_records("s", "k1", 1, 130)] == written["k1"]
    assert history(crashed, "k1") == history(tmp_path, "k1")


def test_history_keeps_working_as_segments_roll_after_a_reopen(tmp_path: Path) -> None:
    written = fill(tmp_path, 200)
    with evstate.open(tmp_path, **SMALL) as store:
        assert [e.revision for e in store.history("s", "k0")] == written["k0"]
        for i in range(200):  # rolls: the index (built from files) takes the new segments
            store.set("s", "k0", {"pad": "z" * 100, "i": i})
            written["k0"].append(store.revision)
        assert [e.revision for e in store.history("s", "k0")] == written["k0"]
        assert [e.revision for e in store.history("s", "k0", since=150, until=300)] == [
            r for r in written["k0"] if 150 <= r <= 300
        ]
    assert stems(tmp_path, ".keys") == stems(tmp_path, ".log")


def test_times_are_answered_from_the_index_files(tmp_path: Path) -> None:
    fill(tmp_path, 300)
    with evstate.open(tmp_path, **SMALL) as store:
        stamps = [(e.revision, e.timestamp) for e in store.events()]
    index = timeline(tmp_path).index()
    assert index.scanned_bytes == 0
    for _, stamp in stamps[::17]:
        for ms in (stamp - 1, stamp, stamp + 1):
            assert index.revision_at_time(ms) == max((r for r, t in stamps if t <= ms), default=0)
            assert index.first_revision_from_time(ms) == min(
                (r for r, t in stamps if t >= ms), default=301
            )


def test_compaction_removes_index_files_with_their_segments(tmp_path: Path) -> None:
    with evstate.open(tmp_path, **SMALL, retention={"revisions": 50}) as store:
        for i in range(400):
            store.set("s", f"k{i % 9}", {"i": i, "pad": "x" * 40})
            if i % 100 == 99:
                store.snapshot()  # seals a segment: its index is pending
                compacted = store.compact()
                assert stems(tmp_path, ".keys") <= stems(tmp_path, ".log")
                if compacted["base"] is not None:  # it wrote the pending index first
                    newest = max(stems(tmp_path, ".log"))
                    assert stems(tmp_path, ".keys") == stems(tmp_path, ".log") - {newest}
        oldest = store.stats()["oldest_revision"]
        assert oldest > 1
    holding_records = {p.name[:-4] for p in tmp_path.glob("*.log") if p.stat().st_size > 24}
    assert stems(tmp_path, ".keys") == holding_records  # the newest is empty: nothing to index
    assert min(int(s) for s in stems(tmp_path, ".keys")) == oldest
    with evstate.open(tmp_path, **SMALL) as store:
        assert [e.revision for e in store.history("s", "k1", since=oldest)] == [
            r for r in range(oldest, 401) if (r - 1) % 9 == 1
        ]


def test_a_follower_reads_the_index_files_and_writes_nothing(tmp_path: Path) -> None:
    written = fill(tmp_path)
    (tmp_path / "00000000000000999999.keys").write_bytes(b"stray")  # the owner's business
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"}
    with evstate.follow(tmp_path) as follower:
        for key, revisions in written.items():
            assert [e.revision for e in follower.history("s", key)] == revisions
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"}
    assert after == before


# ---- the format table ----------------------------------------------------------------------


def test_format_doc_key_index_table_matches_the_layout() -> None:
    body = DOC.split("## 11. Key index files", 1)[1].split("\n## ", 1)[0]
    header = body.split("Header (", 1)[1].split("\n\n", 2)[1]
    rows = [(int(o), int(s)) for o, s in re.findall(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|", header, re.M)]
    assert sum(size for _, size in rows) == KEY_INDEX_HEADER.size
    assert all(a + sa == b for (a, sa), (b, _) in itertools.pairwise(rows))
    assert f"{KEY_INDEX_ENTRY_BYTES} bytes" in body


# ---- with and without index files: the same answers ----------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 11), st.integers(0, 300)),
        st.tuples(st.just("delete"), st.integers(0, 11), st.just(0)),
        st.tuples(st.just("batch"), st.integers(0, 11), st.integers(1, 4)),
        st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_history_is_the_same_with_and_without_index_files(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("model")
    model: dict[str, list[int]] = {}
    revision = 0
    store = evstate.open(path, **SMALL)
    try:
        for kind, k, n in ops:
            key = f"k{k}"
            if kind == "set":
                store.set("s", key, {"pad": "p" * n})
                revision += 1
                model.setdefault(key, []).append(revision)
            elif kind == "delete":
                store.delete("s", key)
                revision += 1
                model.setdefault(key, []).append(revision)
            elif kind == "batch":
                with store.batch() as batch:
                    for j in range(n):
                        batch.set("s", f"k{(k + j) % 12}", j)
                for j in range(n):
                    model.setdefault(f"k{(k + j) % 12}", []).append(revision + 1 + j)
                revision += n
            elif kind == "snapshot":
                store.snapshot()
            else:
                store.close()
                store = evstate.open(path, **SMALL)
            assert store.revision == revision
    finally:
        store.close()
    bare = path.parent / (path.name + "-bare")
    shutil.copytree(path, bare, ignore=shutil.ignore_patterns("*.keys", "LOCK"))
    with_files, without = timeline(path), timeline(bare)
    assert with_files.index().scanned_bytes == 0
    for k in range(12):
        key = f"k{k}"
        got = [(r.revision, r.new) for r in with_files.key_records("s", key, 1, revision)]
        assert got == [(r.revision, r.new) for r in without.key_records("s", key, 1, revision)]
        assert [r for r, _ in got] == model.get(key, [])
        assert isinstance(with_files.index(), LogIndex)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_mutated_index_file_is_read_or_refused_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Whatever bytes an index file holds, reading it gives a checked table or KeyIndexError."""
    path = reference_store(tmp_path_factory)
    segment = sorted(path.glob("*.log"))[1]
    original = segment.with_suffix(".keys").read_bytes()
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del damaged[data.draw(st.integers(0, len(damaged))) :]
    work = tmp_path_factory.mktemp("mutated")
    shutil.copy(segment, work / segment.name)
    (work / segment.with_suffix(".keys").name).write_bytes(bytes(damaged))
    try:
        table = read_key_index(str(work / segment.name), int(segment.stem), next_first=None)
    except KeyIndexError:
        return
    assert table is not None and bytes(damaged) == original  # a checksum catches the rest


_REFERENCE: list[Path] = []


def reference_store(factory: pytest.TempPathFactory) -> Path:
    if not _REFERENCE:
        path = factory.mktemp("reference")
        fill(path, 200)
        _REFERENCE.append(path)
    return _REFERENCE[0]


def test_a_sealed_segments_file_is_built_from_the_records_as_written(tmp_path: Path) -> None:
    """The owner indexes the open segment as it appends (batches included), so sealing it
    reads nothing back; the file is byte-for-byte the one a rebuild from the segment makes."""
    from evstate.backends.file.key_index_writer import build_key_index

    path = tmp_path / "store"
    with evstate.open(path, **SMALL) as store:
        for i in range(300):
            if i % 10 == 0:
                with store.batch() as batch:
                    for j in range(3):
                        batch.set("b", f"k{j}", {"i": i, "j": j})
            else:
                store.set("s", f"k{i % 13}", {"i": i, "pad": "y" * (i % 50)})
    segments = sorted(path.glob("*.log"))
    assert len(segments) > 3
    for current, following in itertools.pairwise(segments):
        first = int(current.name[:-4])
        written = (path / f"{current.name[:-4]}.keys").read_bytes()
        rebuilt_path = tmp_path / "rebuilt" / current.name
        rebuilt_path.parent.mkdir(exist_ok=True)
        shutil.copy(current, rebuilt_path)
        rebuilt = build_key_index(first, str(rebuilt_path), int(following.name[:-4]))
        assert rebuilt == written, current.name


def test_the_open_segments_file_at_close_is_built_from_the_records_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean close indexes the open segment from the writer's own record of it (batches
    included): nothing is read back, and the file equals a rebuild from the segment."""
    from evstate.backends.file import key_index_writer
    from evstate.backends.file.key_index_writer import build_key_index

    path = tmp_path / "store"
    store = evstate.open(path, segment_size_bytes=1 << 20, save_interval_ms=3_600_000)
    for i in range(200):
        if i % 10 == 0:
            with store.batch() as batch:
                for j in range(3):
                    batch.set("b", f"k{j}", {"i": i, "j": j})
        else:
            store.set("s", f"k{i % 13}", {"i": i})

    def no_read_back(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the open segment was read back at close")

    monkeypatch.setattr(key_index_writer, "build_key_index", no_read_back)
    store.close()
    monkeypatch.undo()
    [segment] = path.glob("*.log")
    written = (path / f"{segment.name[:-4]}.keys").read_bytes()
    rebuilt_path = tmp_path / "rebuilt" / segment.name
    rebuilt_path.parent.mkdir()
    shutil.copy(segment, rebuilt_path)
    assert build_key_index(1, str(rebuilt_path), None) == written
