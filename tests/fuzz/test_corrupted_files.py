"""Fuzzing whole store directories: one damaged file, then open, read, at(), verify().

Reference directories are written once (several segments; snapshots with and without
compaction; a trigger cursor file), with the state of every revision known. Each example
copies one, damages one file (bit flips, overwrites, cuts, inserts, zeroed or duplicated
ranges) and opens it. The promise (docs/format.md sections 4, 5, 7): a damaged file is reported
(``CorruptionError``, ``recovery_notes``, or ``verify()`` for files open() does not read),
never returned as data:

- open raises ``CorruptionError`` and changes no file; or
- the state is exactly the state of some revision of the original (a torn tail cut off is
  allowed, and then reported unless the cut fell exactly on a record boundary), ``at()``
  answers every revision from the horizon with its true state or raises a documented
  error, and the damage shows in ``recovery_notes`` or ``verify()``.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import given

import evstate
from evstate.backends.file.segment import HEADER_SIZE
from tests.fuzz.fuzzlib import fuzz_settings, mutated, no_hang

State = dict[str, dict[str, Any]]


def _state(view: Any) -> State:
    return {scope: view.list(scope) for scope in view.list_groups()["groups"]}


@functools.cache
def reference(kind: str) -> tuple[str, list[State]]:
    """A store directory of ``kind`` ("log", "snapshots", "compacted") and its states."""
    path = tempfile.mkdtemp(prefix=f"evstate-fuzz-{kind}-")
    options: dict[str, Any] = {
        "fsync": "never",
        "segment_size_bytes": 4096,
        "save_interval_ms": 3_600_000,
        "retention": {"revisions": 30} if kind == "compacted" else "forever",
    }
    states: list[State] = [{}]
    with evstate.open(path, **options) as store:
        store.trigger("t", lambda event: None, start="earliest")
        for i in range(1, 121):
            scope, key = ("a", "b")[i % 2], f"k{i % 7}"
            if i % 9 == 0:
                store.delete(scope, key)
            else:
                store.set(scope, key, {"i": i, "pad": "p" * (i * 7 % 150)})
            states.append(_state(store))
            if kind != "log" and i % 40 == 0:
                store.snapshot()
        if kind == "compacted":
            store.compact()
        store.wait_for_triggers(timeout=30)
    return path, states


def _boundaries(data: bytes) -> set[int]:
    """Offsets where a record of a segment image ends (and the header end)."""
    ends, pos = {HEADER_SIZE}, HEADER_SIZE
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 8 + length
        ends.add(pos)
    return ends


def _files(kind: str) -> list[str]:
    path, _ = reference(kind)
    return sorted(n for n in os.listdir(path) if n != "LOCK")


def _check_damaged_directory(tmp: Path, kind: str, index: int, data: st.DataObject) -> None:
    source, states = reference(kind)
    head = len(states) - 1
    work = tmp / "store"
    shutil.copytree(source, work)
    names = _files(kind)
    name = names[index % len(names)]
    original = (work / name).read_bytes()
    damaged = data.draw(mutated(original), label=name)
    reserved = {".log": (20, 24), ".snap": (28, 32)}.get(os.path.splitext(name)[1])
    changed = damaged != original
    if reserved and len(damaged) == len(original):  # the header's reserved bytes: ignored
        lo, hi = reserved
        changed = damaged[:lo] + damaged[hi:] != original[:lo] + original[hi:]
    (work / name).write_bytes(damaged)
    before = {n: (work / n).read_bytes() for n in os.listdir(work) if n != "LOCK"}
    segments = [n for n in names if n.endswith(".log")]
    last_segment = name == segments[-1]
    clean_cut = (
        last_segment and original.startswith(damaged) and len(damaged) in _boundaries(original)
    )
    with no_hang(20):
        try:
            store = evstate.open(work)
        except evstate.CorruptionError:
            after = {n: (work / n).read_bytes() for n in os.listdir(work) if n != "LOCK"}
            assert after == before, "a failed open changed files"
            return
        with store:
            revision = store.revision
            assert _state(store) == states[revision], "damaged data returned as state"
            notes = store.recovery_notes
            if revision < head:
                assert last_segment, "revisions lost although the last segment is intact"
                assert notes or clean_cut, "a cut-off tail was not reported"
            problems = store.verify()
            if changed and name.endswith((".log", ".snap")) and not clean_cut:
                assert notes or problems, f"damage to {name} went unreported"
            horizon = store.stats()["horizon_revision"]
            for target in range(horizon, revision + 1, 7):
                try:
                    view = store.at(target)
                except (evstate.CorruptionError, evstate.HistoryCompactedError):
                    continue  # reported, not answered
                assert _state(view) == states[target], f"at({target}) returned damaged data"


@fuzz_settings(0.4)
@given(st.sampled_from(["log", "snapshots", "compacted"]), st.integers(0, 50), st.data())
def test_a_damaged_file_is_reported_never_returned_as_data(
    tmp_path_factory: Any, kind: str, index: int, data: st.DataObject
) -> None:
    _check_damaged_directory(tmp_path_factory.mktemp("fuzz"), kind, index, data)


def test_a_bit_flip_in_a_checkpointed_cursor_is_not_trusted(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        store.trigger("t", lambda event: None, start="earliest")
        for i in range(5):
            store.set("s", str(i), i)
        store.wait_for_triggers(timeout=10)
    path = tmp_path / "triggers.cbor"
    data = path.read_bytes()
    assert data.count(b"fcursor\x05") == 1
    path.write_bytes(data.replace(b"fcursor\x05", b"fcursor\x07"))  # one flipped bit
    seen: list[int] = []
    with evstate.open(tmp_path) as store:
        store.trigger("t", lambda event: seen.append(event.revision))
        store.set("s", "x", 1)
        store.set("s", "y", 2)
        store.wait_for_triggers(timeout=10)
    assert seen == [6, 7]  # the checksum rejects the flipped file; the log's cursor counts
