"""Key index files: where each key's records are in one segment (docs/format.md section 11).

A key index file ``<first>.keys`` sits next to segment ``<first>.log`` and describes the
records in the first ``covered_size`` bytes of that segment: the offset and timestamp of
each revision, and the sorted ``(key hash, revision)`` pairs of those revisions. It is a
cache, never a source of truth:

- :func:`read_key_index` checks the file's own checksums and that it describes the segment
  on disk now (its first revision, a checksum of its header, which holds the segment's
  random salt, its size, and the frame of the last record it covers) before it is used;
- a lookup gives *candidate* revisions (a 32-bit hash can be shared by two keys): each is
  read from the segment, checksum-verified, and kept only if it is the key asked for.

Lookups (:meth:`KeyTable.revisions`) bisect the file's sorted pairs in place, so a table of
a million revisions costs one read and no per-key object until a key is asked for.
"""

from __future__ import annotations

import os
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import NamedTuple

from evstate.backends.file.layout import (
    FRAME,
    FRAME_SIZE,
    KEY_INDEX_ENTRY_BYTES,
    KEY_INDEX_HEADER,
    KEY_INDEX_MAGIC,
    KEY_INDEX_VERSION,
    SEGMENT_HEADER_SIZE,
    key_index_name,
)

__all__ = [
    "KeyIndexError",
    "KeyTable",
    "encode_key_index",
    "key_hash",
    "key_index_path",
    "read_key_index",
    "scope_seed",
]

_BIG_ENDIAN = sys.byteorder == "big"  # the file is little-endian; arrays are native
_LOW = 0xFFFFFFFF


class _Header(NamedTuple):
    """The fields of :data:`KEY_INDEX_HEADER`, in order."""

    magic: bytes
    version: int
    flags: int
    first_revision: int
    segment_header_crc: int
    records: int
    covered_size: int
    last_offset: int
    last_crc: int
    body_crc: int
    reserved: int
    header_crc: int


class KeyIndexError(ValueError):
    """A key index file is damaged, or does not describe its segment as it is now."""


def key_index_path(segment_path: str, first_revision: int) -> str:
    """The key index file of segment ``segment_path`` (in the same directory)."""
    return os.path.join(os.path.dirname(segment_path), key_index_name(first_revision))


def scope_seed(scope: str) -> int:
    """The part of :func:`key_hash` that depends on the scope only (to reuse it)."""
    scope_bytes = scope.encode()
    return zlib.crc32(scope_bytes, zlib.crc32(len(scope_bytes).to_bytes(4, "little")))


def key_hash(scope: str, key: str, seed: int | None = None) -> int:
    """The 32-bit hash key index files file ``scope/key`` under.

    CRC-32 of the scope's UTF-8 length (u32), the scope and the key (UTF-8); ``seed`` is
    :func:`scope_seed` of ``scope`` when the caller has it.
    """
    return zlib.crc32(key.encode(), scope_seed(scope) if seed is None else seed)


def _native(values: array[int]) -> array[int]:
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def encode_key_index(
    segment_header: bytes,
    covered_size: int,
    last_frame: tuple[int, int],
    timestamps: array[int],
    offsets: array[int],
    keys: list[int],
) -> bytes:
    """The bytes of a key index file.

    ``segment_header`` is the segment's header (its first 24 bytes); the index covers its
    records up to byte ``covered_size``, the last of which is framed at ``last_frame[0]``
    with checksum ``last_frame[1]``. ``timestamps`` and ``offsets`` hold one entry per
    revision from the segment's first on, and ``keys`` one ``key_hash << 32 | revision -
    first`` per revision, in any order (they are sorted here).
    """
    records = len(offsets)
    if len(keys) != records or len(timestamps) != records:
        raise ValueError("every revision must have one timestamp, one offset and one key")
    sections = [array("q", timestamps), array("I", offsets), array("Q", sorted(keys))]
    body = b"".join(_native(section).tobytes() for section in sections)
    header = _Header(
        KEY_INDEX_MAGIC,
        KEY_INDEX_VERSION,
        0,
        int.from_bytes(segment_header[8:16], "little"),
        zlib.crc32(segment_header[:SEGMENT_HEADER_SIZE]),
        records,
        covered_size,
        last_frame[0],
        last_frame[1],
        zlib.crc32(body),
        0,
        0,
    )
    header_crc = zlib.crc32(KEY_INDEX_HEADER.pack(*header)[:52])
    return KEY_INDEX_HEADER.pack(*header._replace(header_crc=header_crc)) + body


class KeyTable:
    """The checked content of one key index file (see :func:`read_key_index`).

    ``records`` revisions from ``first`` on are described, all in the segment's first
    ``covered_size`` bytes. ``timestamps`` and ``offsets`` hold one entry per revision; a
    :class:`~evstate.backends.file.segment_part.SegmentPart` takes them over. No view of the
    file's bytes is kept: only the sorted keys (8 bytes a revision) stay with the table.
    """

    __slots__ = ("_keys", "covered_size", "first", "header", "offsets", "records", "timestamps")

    def __init__(self, data: bytes, path: str) -> None:
        """Parse and check the image ``data`` of the file at ``path`` (file checks only).

        Raises:
            KeyIndexError: short, bad magic, version or checksum, or inconsistent sizes.
        """
        size = KEY_INDEX_HEADER.size
        if len(data) < size:
            raise KeyIndexError(f"{path}: truncated header")
        self.header = header = _Header._make(KEY_INDEX_HEADER.unpack_from(data))
        if header.magic != KEY_INDEX_MAGIC or zlib.crc32(data[:52]) != header.header_crc:
            raise KeyIndexError(f"{path}: bad header")
        if header.version != KEY_INDEX_VERSION:
            raise KeyIndexError(f"{path}: unsupported key index version {header.version}")
        records = header.records
        if len(data) != size + KEY_INDEX_ENTRY_BYTES * records:
            raise KeyIndexError(f"{path}: {len(data)} bytes, not what its header describes")
        view = memoryview(data)
        if zlib.crc32(view[size:]) != header.body_crc:
            raise KeyIndexError(f"{path}: body checksum mismatch")
        if records == 0 or header.covered_size < SEGMENT_HEADER_SIZE + FRAME_SIZE:
            raise KeyIndexError(f"{path}: describes no record")
        self.first, self.records = header.first_revision, records
        self.covered_size = header.covered_size
        self.timestamps, self.offsets = array("q"), array("I")
        self.timestamps.frombytes(view[size : size + 8 * records])
        self.offsets.frombytes(view[size + 8 * records : size + 12 * records])
        keys = array("Q")
        keys.frombytes(view[size + 12 * records :])
        _native(self.timestamps)
        _native(self.offsets)
        self._keys: Sequence[int] = _native(keys)

    def revisions(self, hashed: int) -> list[int]:
        """The revisions filed under :func:`key_hash` ``hashed``, counted from ``first``.

        Ascending: those of the key, and of any other key with the same hash.
        """
        keys = self._keys
        low = bisect_left(keys, hashed << 32)
        high = bisect_left(keys, (hashed + 1) << 32, low)
        return [entry & _LOW for entry in keys[low:high]]

    def entries(self) -> Sequence[int]:
        """Every ``key_hash << 32 | revision - first`` of the table, ascending."""
        return self._keys


def read_key_index(segment_path: str, first: int, *, next_first: int | None) -> KeyTable | None:
    """The key index of segment ``segment_path`` (named ``first``), checked; None if absent.

    The index must describe the segment as it is on disk now: the same first revision and
    header (so the same random salt), a size at least ``covered_size``, and the frame of the
    last record it covers where it says. ``next_first`` is the first revision of the next
    segment (None for the newest): the index may not describe revisions at or past it.

    Raises:
        KeyIndexError: the file is damaged or describes another segment (rebuild it).
        FileNotFoundError: the segment is gone.
    """
    index_path = key_index_path(segment_path, first)
    try:
        with open(index_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    table = KeyTable(data, index_path)
    header = table.header
    with open(segment_path, "rb") as f:
        segment_header = os.pread(f.fileno(), SEGMENT_HEADER_SIZE, 0)
        frame = os.pread(f.fileno(), FRAME_SIZE, header.last_offset)
        size = os.fstat(f.fileno()).st_size
    if table.first != first or zlib.crc32(segment_header) != header.segment_header_crc:
        raise KeyIndexError(f"{index_path}: describes another segment")
    if table.covered_size > size:
        raise KeyIndexError(f"{index_path}: covers {table.covered_size} bytes of {size}")
    length, crc = FRAME.unpack(frame) if len(frame) == FRAME_SIZE else (0, None)
    end = header.last_offset + FRAME_SIZE + length
    if crc != header.last_crc or end != table.covered_size:
        raise KeyIndexError(f"{index_path}: its last record is not in the segment")
    if next_first is not None and first + table.records > next_first:
        raise KeyIndexError(f"{index_path}: describes revisions of the next segment")
    return table
