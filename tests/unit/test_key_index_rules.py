"""One test per rule of docs/format.md section 11 ("Key index recovery rules"), named after it.

A key index file is a cache of its segment: whatever is wrong with it, history() answers
what the log says. The owner rewrites a missing or bad file from the segment (checked in
the background after open); readers never write.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.index import scan_records
from evstate.backends.file.key_index import (
    KeyIndexError,
    encode_key_index,
    key_hash,
    read_key_index,
)
from evstate.backends.file.key_index_writer import KeyIndexWriter
from evstate.backends.file.layout import KEY_INDEX_HEADER
from evstate.backends.file.segment import list_segments
from evstate.backends.file.segment_part import SegmentPart, encode_segment_part, index_segment
from evstate.backends.file.timeline import FileTimeline

SMALL = {"segment_size_bytes": 4096, "save_interval_ms": 3_600_000}


def fill(path: Path, n: int = 300, **options: Any) -> None:
    with evstate.open(path, **{**SMALL, **options}) as store:
        for i in range(n):
            store.set("s", f"k{i % 13}", {"i": i, "pad": "x" * (i % 50)})


def head_of(path: Path) -> int:
    return max(r.revision for seg in path.glob("*.log") for _, r in scan_records(str(seg)))


def reader(path: Path) -> FileTimeline:
    """A read-only view of a closed store directory (what a follower uses)."""
    head = head_of(path)
    return FileTimeline(str(path), DiskIO(), threading.Lock(), lambda: head)


def answers(path: Path) -> dict[str, list[tuple[int, bytes | None]]]:
    """Every key's history as (revision, encoded new value), read through a fresh index."""
    view, head = reader(path), head_of(path)
    return {
        f"k{k}": [(r.revision, r.new) for r in view.key_records("s", f"k{k}", 1, head)]
        for k in range(13)
    }


def rebuild(path: Path) -> None:
    """What the owner does after open, run to the end: check every sealed segment's index
    file, rewrite the missing and bad ones (a store's close does not wait for the checks)."""
    writer = KeyIndexWriter(str(path), DiskIO())
    writer.start(list_segments(str(path), DiskIO()))
    writer.close(None, wait_for_checks=True)


def sealed_index(path: Path, n: int = 2) -> tuple[Path, Path]:
    """The ``n``-th segment and its index file (a sealed one)."""
    segment = sorted(path.glob("*.log"))[n]
    return segment, segment.with_suffix(".keys")


@pytest.fixture
def store_dir(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[int, bytes | None]]]]:
    path = tmp_path / "store"
    fill(path)
    return path, answers(path)


def test_a_missing_index_file_is_read_from_its_segment_and_rebuilt(
    store_dir: tuple[Path, Any],
) -> None:
    path, expected = store_dir
    segment, index_file = sealed_index(path)
    original = index_file.read_bytes()
    index_file.unlink()
    view = reader(path)
    assert view.index().scanned_bytes == segment.stat().st_size - 24
    assert answers(path) == expected
    rebuild(path)
    assert index_file.read_bytes() == original


@pytest.mark.parametrize("damage", ["body bit", "header bit", "cut short", "empty", "zeroed"])
def test_a_damaged_index_file_is_ignored_and_rebuilt(
    store_dir: tuple[Path, Any], caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path, expected = store_dir
    segment, index_file = sealed_index(path)
    original = index_file.read_bytes()
    data = bytearray(original)
    if damage == "body bit":
        data[KEY_INDEX_HEADER.size + 13] ^= 0x04
    elif damage == "header bit":
        data[9] ^= 0x01
    elif damage == "cut short":
        del data[-5:]
    elif damage == "empty":
        data.clear()
    else:
        data[:] = bytes(len(data))
    index_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="evstate"):
        view = reader(path)
        assert view.index().scanned_bytes == segment.stat().st_size - 24
    assert "ignored a key index" in caplog.text
    assert answers(path) == expected
    with evstate.open(path, **SMALL) as store:  # the owner answers the same
        assert [e.revision for e in store.history("s", "k5")] == [r for r, _ in expected["k5"]]
    rebuild(path)
    assert index_file.read_bytes() == original


def test_an_index_file_of_another_segment_is_not_used(store_dir: tuple[Path, Any]) -> None:
    path, expected = store_dir
    segment, index_file = sealed_index(path)
    other_store = path.parent / "other"
    fill(other_store)  # the same revisions and keys, but other segments (other salts)
    shutil.copy(other_store / index_file.name, index_file)
    assert reader(path).index().loaded_files == len(list(path.glob("*.log"))) - 1
    assert answers(path) == expected
    neighbour = sealed_index(path, 3)[1]
    shutil.copy(neighbour, index_file)  # another segment's file under this name
    assert reader(path).index().scanned_bytes == segment.stat().st_size - 24
    assert answers(path) == expected
    rebuild(path)
    table = read_key_index(str(segment), int(segment.stem), next_first=None)
    assert table is not None and table.covered_size == segment.stat().st_size


def test_an_index_file_longer_than_its_segment_is_not_used(tmp_path: Path) -> None:
    """The open segment's index (written at a clean close) covers more than the segment
    after damage cut it; records written after that are where it said others were."""
    fill(tmp_path, 40, segment_size_bytes=1 << 20)
    [segment] = tmp_path.glob("*.log")
    last_offset = list(scan_records(str(segment)))[-1][0]
    with open(segment, "r+b") as f:
        f.truncate(last_offset + 11)  # cut into the last record: a torn tail
    (tmp_path / "HEAD").unlink()  # as a writer that crashed leaves it
    index_file = segment.with_suffix(".keys")
    with evstate.open(tmp_path, segment_size_bytes=1 << 20) as store:
        assert store.revision == 39
        with pytest.raises(KeyIndexError, match="covers"):
            read_key_index(str(segment), 1, next_first=None)
        store.set("s", "k0", "new")  # written where revision 40 was
        store.set("s", "k1", "newer")
        store.flush()
        with pytest.raises(KeyIndexError, match="last record"):
            read_key_index(str(segment), 1, next_first=None)
        assert [e.new_value for e in store.history("s", "k0")][-1] == "new"
        assert [e.revision for e in store.history("s", "k0")] == [1, 14, 27, 40]
        assert [e.revision for e in store.history("s", "k1")] == [2, 15, 28, 41]
    table = read_key_index(str(segment), 1, next_first=None)  # rewritten at the close
    assert table is not None and table.records == 41 and index_file.exists()


def test_an_index_file_covering_part_of_its_segment_is_used_for_that_part(tmp_path: Path) -> None:
    fill(tmp_path, 100, segment_size_bytes=1 << 20)
    [segment] = tmp_path.glob("*.log")
    covered = segment.stat().st_size
    crashed = tmp_path.parent / "crashed"
    with evstate.open(tmp_path, segment_size_bytes=1 << 20) as store:
        for i in range(30):
            store.set("s", "k1", i)
        store.flush()
        shutil.copytree(tmp_path, crashed, ignore=shutil.ignore_patterns("LOCK"))
    view = reader(crashed)
    assert view.index().loaded_files == 1
    assert view.index().scanned_bytes == segment.stat().st_size - covered
    assert answers(crashed) == answers(tmp_path)


def test_an_unfinished_index_file_is_removed_at_open(tmp_path: Path) -> None:
    fill(tmp_path)
    _segment, index_file = sealed_index(tmp_path)
    tmp = index_file.with_name(index_file.name + ".tmp")
    tmp.write_bytes(index_file.read_bytes()[:100])
    with evstate.open(tmp_path, **SMALL) as store:
        assert not tmp.exists()
        assert [e.revision for e in store.history("s", "k0")] == list(range(1, 301, 13))


def test_an_index_file_without_its_segment_is_ignored_then_removed_at_open(
    store_dir: tuple[Path, Any],
) -> None:
    path, expected = store_dir
    stray = path / "00000000000000099999.keys"
    shutil.copy(sealed_index(path)[1], stray)
    assert answers(path) == expected  # readers look only at the files of segments
    with evstate.follow(path) as follower:
        assert [e.revision for e in follower.history("s", "k2")] == [r for r, _ in expected["k2"]]
    assert stray.exists()  # followers never remove anything
    with evstate.open(path, **SMALL):
        assert not stray.exists()


def test_an_index_that_points_at_the_wrong_records_is_not_trusted(
    store_dir: tuple[Path, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A file with good checksums whose offsets name other records (crafted: no crash or
    bit flip makes one): the reader finds out when it reads a record, and reads the
    segment instead."""
    path, expected = store_dir
    segment, index_file = sealed_index(path)
    part = SegmentPart(int(segment.stem))
    end = index_segment(part, str(segment), start=24, upto=None)
    offsets = part.offsets
    offsets[0], offsets[1] = offsets[1], offsets[0]  # two revisions swap their records
    index_file.write_bytes(encode_segment_part(part, str(segment), end))
    assert read_key_index(str(segment), part.first, next_first=None) is not None  # it checks out
    with caplog.at_level(logging.WARNING, logger="evstate"):
        assert answers(path) == expected
    assert "disagrees with its segment" in caplog.text


def test_a_key_sharing_its_hash_with_another_gets_only_its_own_records(tmp_path: Path) -> None:
    """Index files file keys by a 32-bit hash: two keys may share one. Each record is read and
    kept only if it is of the key asked for."""
    seen: dict[int, str] = {}
    for i in range(1_000_000):  # about 2**16 keys make a shared hash likely (birthdays)
        key = f"c{(i * 0x9E3779B97F4A7C15) % (1 << 64):016x}"
        hashed = key_hash("s", key)
        if hashed in seen:
            first, second = seen[hashed], key
            break
        seen[hashed] = key
    else:
        pytest.fail("no two keys share a hash")
    with evstate.open(tmp_path, **SMALL) as store:
        for i in range(60):
            store.set("s", (first, second)[i % 2], {"i": i, "pad": "q" * 60})
    view = reader(tmp_path)
    assert view.index().scanned_bytes == 0
    assert [r.key for r in view.key_records("s", first, 1, 60)] == [first] * 30
    assert [r.revision for r in view.key_records("s", second, 1, 60)] == list(range(2, 61, 2))


def test_an_index_is_rebuilt_identically_from_its_segment(store_dir: tuple[Path, Any]) -> None:
    """The encoding is a function of the segment: rebuilding gives the same bytes."""
    path, _ = store_dir
    for segment in sorted(path.glob("*.log"))[:-1]:
        part = SegmentPart(int(segment.stem))
        end = index_segment(part, str(segment), start=24, upto=None)
        assert (
            encode_segment_part(part, str(segment), end)
            == segment.with_suffix(".keys").read_bytes()
        )
    with pytest.raises(ValueError):
        encode_key_index(b"\0" * 24, 32, (24, 0), part.timestamps, part.offsets, [])
