"""The index of one segment: where each revision is, and which revisions each key has.

A :class:`SegmentPart` is what :class:`~evstate.backends.file.index.LogIndex` holds per
segment, and what a key index file (:mod:`evstate.backends.file.key_index`) is written
from. Keys are held by their 32-bit :func:`~evstate.backends.file.key_index.key_hash`, as in
the files: a lookup gives candidates, and the reader keeps the records of the key asked for.

A part comes from two places, in revision order: the segment's key index file, when one
checks out against the segment (:func:`load_segment_part`), and the segment's records after
the bytes that file covers, read one by one (:func:`index_segment`) or appended since.
"""

from __future__ import annotations

import logging
import os
import zlib
from array import array

import cbor2

from evstate.backends.file.key_index import (
    KeyIndexError,
    KeyTable,
    encode_key_index,
    read_key_index,
    scope_seed,
)
from evstate.backends.file.layout import FRAME, FRAME_SIZE, SEGMENT_HEADER_SIZE
from evstate.backends.file.segment import read_header
from evstate.errors import CorruptionError
from evstate.events import RecordDecodeError, decode_entry

__all__ = ["SegmentPart", "encode_segment_part", "index_segment", "load_segment_part"]

log = logging.getLogger("evstate")

_EventKey = tuple[int, int, str, str]  # revision, timestamp, scope, key


class SegmentPart:
    """The revisions ``first`` .. ``last`` of one segment: offset, timestamp, key hash.

    The first ``table_records`` come from the segment's key index file (``table``); the
    others are held in ``keys`` (:func:`key_hash` -> revisions counted from ``first``, as in
    the file). Not thread-safe: the owner (:class:`~evstate.backends.file.index.LogIndex`)
    locks.
    """

    __slots__ = ("_seeds", "first", "keys", "offsets", "table", "table_records", "timestamps")

    def __init__(self, first: int) -> None:
        self.first = first
        self.offsets = array("I")  # u32: a segment is at most about 2 GiB (config.md)
        self.timestamps = array("q")
        self.table: KeyTable | None = None
        self.table_records = 0
        self.keys: dict[int, list[int]] = {}
        self._seeds: dict[str, int] = {}  # scope -> scope_seed(scope)

    @property
    def count(self) -> int:
        """How many revisions this part holds."""
        return len(self.offsets)

    @property
    def last(self) -> int:
        """The newest revision held (``first - 1`` when empty)."""
        return self.first + len(self.offsets) - 1

    def adopt(self, table: KeyTable, count: int) -> None:
        """Start from the first ``count`` revisions of a checked key index (part empty).

        Takes over the table's ``offsets`` and ``timestamps`` arrays.
        """
        self.table, self.table_records = table, count
        self.offsets, self.timestamps = table.offsets, table.timestamps
        del self.offsets[count:], self.timestamps[count:]

    def hash_of(self, scope: str, key: str) -> int:
        """:func:`key_hash` of ``scope/key`` (the scope's share computed once)."""
        seed = self._seeds.get(scope)
        if seed is None:
            seed = self._seeds[scope] = scope_seed(scope)
        return zlib.crc32(key.encode(), seed)

    def add(self, revision: int, timestamp: int, scope: str, key: str, offset: int) -> None:
        """Hold the next revision (the caller checks it is ``last + 1``)."""
        self.offsets.append(offset)
        self.timestamps.append(timestamp)
        hashed = self.hash_of(scope, key)
        held = self.keys.get(hashed)
        if held is None:
            self.keys[hashed] = [revision - self.first]
        else:
            held.append(revision - self.first)

    def revisions(self, hashed: int) -> list[int]:
        """The revisions held under key hash ``hashed``, oldest first.

        Those of the key asked for, and of any other key with the same hash: the caller
        checks the records.
        """
        first = self.first
        found: list[int] = []
        if self.table is not None:
            limit = self.table_records
            found = [first + r for r in self.table.revisions(hashed) if r < limit]
        held = self.keys.get(hashed)
        if held:
            found.extend([first + r for r in held])
        return found

    def entries(self) -> list[int]:
        """Every revision as ``key_hash << 32 | revision - first`` (to write a file)."""
        found: list[int] = []
        if self.table is not None:
            limit = self.table_records
            found = [entry for entry in self.table.entries() if entry & 0xFFFFFFFF < limit]
        for hashed, revisions in self.keys.items():
            high = hashed << 32
            found.extend([high | r for r in revisions])
        return found


def _decode_events(payload: memoryview, path: str, offset: int) -> list[_EventKey]:
    """``(revision, timestamp, scope, key)`` of each event of any record payload."""
    try:
        records = decode_entry(payload).records
    except RecordDecodeError as exc:
        raise CorruptionError(str(exc), path=path, offset=offset) from None
    return [(r.revision, r.timestamp, r.scope, r.key) for r in records]


def index_segment(part: SegmentPart, path: str, *, start: int, upto: int | None) -> int:
    """Add the records of segment ``path`` from byte ``start`` on to ``part``, in order.

    Stops at the first damaged record, or before the first revision past ``upto``.
    Returns the offset it stopped at (the file size when every record was taken).

    Raises:
        CorruptionError: a bad header, an undecodable record, or a revision out of order.
        FileNotFoundError: the segment is gone.
    """
    with open(path, "rb") as f:
        header = os.pread(f.fileno(), SEGMENT_HEADER_SIZE, 0)
        f.seek(start)
        data = f.read()
    try:
        salt = read_header(header)[1]
    except ValueError as exc:
        raise CorruptionError(f"bad segment header: {exc}", path=path, offset=0) from None
    # The loop that indexes whole segments, so it is flat: the frame checks of
    # segment.scan_segment (stopping at the first bad frame: readers report damage), and a
    # single event (kind 1, docs/format.md section 2) read straight from its CBOR array.
    # Nothing here vouches for a record: a read through the index decodes and checks it.
    buf, end, pos = memoryview(data), len(data), 0
    first, expected, keys, hash_of = part.first, part.last + 1, part.keys, part.hash_of
    offsets: list[int] = []
    timestamps: list[int] = []
    unpack, crc32, loads = FRAME.unpack_from, zlib.crc32, cbor2.loads
    try:
        while end - pos >= FRAME_SIZE:
            length, crc = unpack(buf, pos)
            body = pos + FRAME_SIZE
            payload = buf[body : body + length]
            if (
                not 0 < length <= end - body
                or crc32(payload, crc32(buf[pos : pos + 4], salt)) != crc
            ):
                break
            offset = start + pos
            try:
                item = loads(payload)
            except Exception:  # cbor2 raises several types for bad input
                item = None
            if type(item) is list and len(item) in (8, 9) and item[0] == 1:
                events: list[_EventKey] | tuple[_EventKey] = ((item[1], item[2], item[4], item[5]),)
            else:
                events = _decode_events(payload, path, offset)
            for revision, timestamp, scope, key in events:
                if upto is not None and revision > upto:
                    return offset
                if type(timestamp) is not int or type(scope) is not str or type(key) is not str:
                    raise CorruptionError(
                        "record fields have wrong types", path=path, offset=offset
                    )
                if revision != expected:
                    raise CorruptionError(
                        f"revision {revision} where {expected} was expected",
                        path=path,
                        offset=offset,
                    )
                offsets.append(offset)
                timestamps.append(timestamp)
                hashed = hash_of(scope, key)
                held = keys.get(hashed)
                if held is None:
                    keys[hashed] = [revision - first]
                else:
                    held.append(revision - first)
                expected += 1
            pos = body + length
        return start + pos
    finally:
        part.offsets.extend(offsets)
        part.timestamps.extend(timestamps)


def load_segment_part(
    first: int, path: str, next_first: int | None, head: int
) -> tuple[SegmentPart, bool, int]:
    """The index of segment ``path`` (named ``first``) up to revision ``head``.

    Uses the segment's key index file when it checks out (``next_first``: the next
    segment's first revision, None for the newest) and reads the records after the bytes
    it covers; a missing or bad file means reading the whole segment. Returns the part,
    whether the file was used, and how many segment bytes were read record by record.

    Raises:
        CorruptionError: see :func:`index_segment`.
        FileNotFoundError: the segment is gone (compacted).
    """
    part = SegmentPart(first)
    start = SEGMENT_HEADER_SIZE
    try:
        table = read_key_index(path, first, next_first=next_first)
    except KeyIndexError as exc:
        log.warning("evstate: ignored a key index (%s); reading the segment instead", exc)
        table = None
    if table is not None:
        count = min(table.records, head - first + 1)
        part.adopt(table, count)
        if count < table.records:
            return part, True, 0  # the rest is past the head this reader has applied
        start = table.covered_size
    end = index_segment(part, path, start=start, upto=head)
    return part, table is not None, end - start


def encode_segment_part(part: SegmentPart, path: str, covered_size: int) -> bytes:
    """The key index file of ``part``: every record in segment ``path``'s first bytes.

    ``covered_size`` is where the part's last record ends in the segment.

    Raises:
        OSError: the segment cannot be read.
        ValueError: the part is empty.
    """
    if not part.count:
        raise ValueError("no record to index")
    last_offset = part.offsets[-1]
    with open(path, "rb") as f:
        header = os.pread(f.fileno(), SEGMENT_HEADER_SIZE, 0)
        frame = os.pread(f.fileno(), FRAME_SIZE, last_offset)
    _length, crc = FRAME.unpack(frame)
    return encode_key_index(
        header, covered_size, (last_offset, crc), part.timestamps, part.offsets, part.entries()
    )
