"""Fuzzing the file decoders: records, segment images, snapshots, the cursor file.

Random bytes, structured-but-wrong CBOR behind valid checksums, and mutations of valid
encodings. Each decoder either returns well-typed data or raises its documented error
(``RecordDecodeError`` / ``ValueError`` / ``SnapshotError``, all ValueErrors); it never
hangs and never raises anything else.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path
from typing import Any

import cbor2
import hypothesis.strategies as st
import pytest
from hypothesis import given

from evstate.backends.file.cursors import decode_cursor_file
from evstate.backends.file.segment import (
    HEADER_SIZE,
    decode_header,
    encode_header,
    frame_record,
    scan_segment,
)
from evstate.backends.file.snapshot import (
    Snapshot,
    SnapshotError,
    SnapshotInfo,
    read_snapshot,
    write_snapshot,
)
from evstate.events import (
    EVENT_TYPE_NAMES,
    EventRecord,
    LogEntry,
    RecordDecodeError,
    decode_entry,
    encode_batch,
    encode_record,
)
from evstate.testing import FaultyIO
from evstate.values import encode_value
from tests.fuzz.fuzzlib import fuzz_settings, mutated, no_hang

texts = st.text(max_size=8)
values = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8) | st.booleans()
encoded = values.map(encode_value)
records = st.builds(
    lambda rev, ts, code, scope, key, old, new: EventRecord(
        rev, ts, code, scope, key, old, None if code == 3 else new
    ),
    st.integers(1, 2**40),
    st.integers(0, 2**45),
    st.sampled_from(sorted(EVENT_TYPE_NAMES)),
    texts,
    texts,
    st.none() | encoded,
    encoded,
)
cbor_items = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def _check_entry(entry: LogEntry) -> None:
    """A decoded entry is well typed (what replay relies on).

    ``decode_entry`` accepts a batch of no events (``[2, [], ...]``), which no writer makes;
    recovery rejects such a record as corruption
    (tests/faults/test_regressions.py::test_an_empty_batch_record_is_corruption).
    """
    for record in entry.records:
        assert type(record.revision) is int and record.revision >= 1
        assert type(record.timestamp) is int
        assert record.type_code in EVENT_TYPE_NAMES
        assert type(record.scope) is str and type(record.key) is str
        assert record.old is None or type(record.old) is bytes
        assert (record.new is None) == (record.type_code == 3)
    if entry.cursor is not None:
        name, cursor = entry.cursor
        assert type(name) is str and type(cursor) is int and cursor >= 0


def _decode(payload: bytes) -> None:
    with no_hang():
        try:
            entry = decode_entry(payload)
        except RecordDecodeError:
            return
    _check_entry(entry)


def test_an_unhashable_event_type_code_is_a_record_decode_error() -> None:
    with pytest.raises(RecordDecodeError):
        decode_entry(cbor2.dumps([1, 1, 0, [], "s", "k", None, None]))


# ---- records --------------------------------------------------------------------------


@fuzz_settings()
@given(st.binary(max_size=200))
def test_record_decoder_on_random_bytes(payload: bytes) -> None:
    _decode(payload)


@fuzz_settings()
@given(
    st.one_of(
        cbor_items,
        st.lists(cbor_items, min_size=8, max_size=8).map(lambda x: [1, *x[1:]]),
        st.lists(cbor_items, min_size=4, max_size=4).map(lambda x: [2, *x[1:]]),
        st.tuples(
            st.lists(st.lists(cbor_items, min_size=7, max_size=7), max_size=3),
            cbor_items,
            cbor_items,
        ).map(lambda x: [2, x[0], x[1], x[2]]),
    )
)
def test_record_decoder_on_wrong_shapes(item: Any) -> None:
    _decode(cbor2.dumps(item))


@fuzz_settings()
@given(
    st.data(),
    st.lists(records, min_size=1, max_size=3),
    st.none() | st.tuples(texts, st.integers(0, 2**40)),
)
def test_record_decoder_round_trips_and_survives_mutations(
    data: st.DataObject, batch: list[EventRecord], cursor: tuple[str, int] | None
) -> None:
    single = encode_record(batch[0])
    assert decode_entry(single) == LogEntry([batch[0]], None)
    batch = [r._replace(revision=batch[0].revision + i) for i, r in enumerate(batch)]
    payload = encode_batch(batch, cursor)
    assert decode_entry(payload) == LogEntry(batch, cursor)
    _decode(data.draw(mutated(single)))
    _decode(data.draw(mutated(payload)))


# ---- segment images ---------------------------------------------------------------------


def _segment(payloads: list[bytes], first: int = 1) -> bytes:
    return encode_header(first) + b"".join(frame_record(p) for p in payloads)


def _check_scan(data: bytes) -> None:
    with no_hang():
        result = scan_segment(data)
    assert HEADER_SIZE <= result.valid_end <= max(len(data), HEADER_SIZE)
    pos = HEADER_SIZE
    for offset, payload in result.records:  # back to back, each checksummed
        assert offset == pos
        length, crc = struct.unpack_from("<II", data, offset)
        assert bytes(payload) == data[offset + 8 : offset + 8 + length]
        assert zlib.crc32(payload, zlib.crc32(data[offset : offset + 4])) == crc
        pos = offset + 8 + length
    assert result.valid_end == pos
    if result.bad_offset is None:
        assert result.valid_end == len(data) or len(data) < HEADER_SIZE
    else:
        assert result.bad_offset == result.valid_end < len(data) and result.reason


@fuzz_settings()
@given(st.binary(max_size=300))
def test_segment_scan_on_random_bytes(data: bytes) -> None:
    _check_scan(encode_header(1) + data)
    with contextlib.suppress(ValueError):
        decode_header(data)


@fuzz_settings()
@given(st.data(), st.lists(records, min_size=1, max_size=6))
def test_segment_scan_on_mutated_segments(data: st.DataObject, recs: list[EventRecord]) -> None:
    image = _segment([encode_record(r) for r in recs])
    result = scan_segment(image)
    assert len(result.records) == len(recs) and result.bad_offset is None
    damaged = data.draw(mutated(image))
    _check_scan(damaged)
    try:
        assert decode_header(damaged) == 1 or damaged[:HEADER_SIZE] != image[:HEADER_SIZE]
    except ValueError:
        assert damaged[:HEADER_SIZE] != image[:HEADER_SIZE]


# ---- snapshots ----------------------------------------------------------------------------


def _read(tmp: Path, image: bytes) -> Snapshot | None:
    path = tmp / "00000000000000000007.snap"
    path.write_bytes(image)
    with no_hang():
        try:
            snap = read_snapshot(SnapshotInfo(7, str(path)), FaultyIO())
        except SnapshotError:
            return None
    for scope, keys in snap.scopes.items():  # well typed, as the table needs it
        assert type(scope) is str
        assert all(type(k) is str and type(v) is bytes for k, v in keys.items())
    assert all(type(n) is str and type(c) is int and c >= 0 for n, c in snap.cursors.items())
    return snap


def _snapshot_image(
    tmp: Path, scopes: dict[str, dict[str, bytes]], cursors: dict[str, int]
) -> bytes:
    info = write_snapshot(str(tmp), 7, 1234, scopes, FaultyIO(), cursors)
    data = Path(info.path).read_bytes()
    Path(info.path).unlink()
    return data


state_maps = st.dictionaries(texts, st.dictionaries(texts, encoded, max_size=5), max_size=3)
cursor_maps = st.dictionaries(texts, st.integers(0, 2**40), max_size=3)


@fuzz_settings(0.5)
@given(st.data(), state_maps, cursor_maps)
def test_snapshot_reader_round_trips_and_rejects_mutations(
    tmp_path_factory: Any,
    data: st.DataObject,
    scopes: dict[str, dict[str, bytes]],
    cursors: dict[str, int],
) -> None:
    tmp = tmp_path_factory.mktemp("snap")
    image = _snapshot_image(tmp, scopes, cursors)
    snap = _read(tmp, image)
    assert snap == Snapshot(7, 1234, {s: k for s, k in scopes.items() if k}, cursors)
    damaged = data.draw(mutated(image))
    got = _read(tmp, damaged)
    if got is not None and damaged != image:  # accepted: only if nothing that counts changed
        assert got == snap, "a damaged snapshot was returned as data"


@fuzz_settings(0.5)
@given(st.lists(cbor_items, max_size=4), cbor_items)
def test_snapshot_reader_on_wrong_shapes_behind_valid_checksums(
    tmp_path_factory: Any, chunks: list[Any], cursors: Any
) -> None:
    """What a buggy writer could leave: checksummed frames holding the wrong CBOR."""
    tmp = tmp_path_factory.mktemp("snap")
    head = struct.pack("<4sHHQQ", b"EVSS", 1, 0, 7, 1234)
    image = head + struct.pack("<II", zlib.crc32(head), 0)
    for chunk in chunks:
        image += frame_record(cbor2.dumps(chunk))
    image += frame_record(cbor2.dumps(["end", len(chunks), 0, cursors]))
    _read(tmp, image)


# ---- the trigger cursor file ------------------------------------------------------------


@fuzz_settings()
@given(
    st.one_of(
        st.binary(max_size=64),
        cbor_items.map(cbor2.dumps),
        st.dictionaries(st.sampled_from(["version", "triggers"]), cbor_items).map(cbor2.dumps),
    )
)
def test_cursor_file_parser_raises_only_value_errors(data: bytes) -> None:
    with no_hang():
        try:
            parsed, _resets = decode_cursor_file(data)
        except (ValueError, cbor2.CBORDecodeError):
            return
    for name, entry in parsed.items():
        cursor, parked = entry.cursor, entry.parked
        assert type(name) is str and type(cursor) is int and cursor >= 0
        assert all(type(p["revision"]) is int for p in parked)
