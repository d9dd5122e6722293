"""One segment file of the log: header, record framing, checksums, scanning.

Format: see docs/format.md section 1 (file header and naming) and section 3 (record framing); the
recovery rules implemented by :func:`scan_segment` are docs/format.md section 4. The byte layouts
are the constants of :mod:`evstate.backends.file.layout`.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import (
    FRAME,
    FRAME_SIZE,
    MAX_RECORD_BYTES,
    PAYLOAD_PREFIXES,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    SEGMENT_NAME_RE,
    SEGMENT_VERSION,
    SEGMENT_VERSIONS,
    segment_name,
)

__all__ = [
    "FRAME",
    "FRAME_SIZE",
    "HEADER_SIZE",
    "ScanResult",
    "decode_header",
    "encode_header",
    "frame_record",
    "list_segments",
    "new_salt",
    "read_header",
    "scan_segment",
    "segment_name",
    "unframe_single",
]

HEADER_SIZE = SEGMENT_HEADER_SIZE


def list_segments(directory: str, io: DiskIO) -> list[tuple[int, str]]:
    """``(first_revision, path)`` of every segment file of ``directory``, oldest first."""
    found = []
    for name in io.listdir(directory):
        match = SEGMENT_NAME_RE.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def new_salt() -> int:
    """A random, non-zero 32-bit salt for a new segment's record checksums."""
    return int.from_bytes(os.urandom(4), "little") or 1


def encode_header(first_revision: int, salt: int = 0) -> bytes:
    """The header of a new segment (format version 2) whose records use ``salt``."""
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_revision, salt, 0)
    crc = zlib.crc32(head[:20])
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_revision, salt, crc)


def read_header(data: bytes) -> tuple[int, int]:
    """``(first revision, salt)`` from a segment header (version 1 has salt 0).

    Raises:
        ValueError: short header, wrong magic, unknown version, or bad header checksum.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, _flags, first_revision, word5, word6 = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    if version not in SEGMENT_VERSIONS:
        raise ValueError(f"unsupported segment format version {version}")
    if version == 1:
        salt, crc, covered = 0, word5, data[:16]
    else:
        salt, crc, covered = word5, word6, data[:20]
    if zlib.crc32(covered) != crc:
        raise ValueError("header checksum mismatch")
    return int(first_revision), int(salt)


def decode_header(data: bytes) -> int:
    """The first revision from a segment header (see :func:`read_header`)."""
    return read_header(data)[0]


def frame_record(payload: bytes, salt: int = 0) -> bytes:
    """Frame one record payload: length, checksum (started from ``salt``), payload."""
    length = len(payload).to_bytes(4, "little")
    return FRAME.pack(len(payload), zlib.crc32(payload, zlib.crc32(length, salt))) + payload


def unframe_single(data: bytes) -> bytes:
    """The payload of a file holding exactly one framed record (docs/format.md sections 3, 7).

    Raises:
        ValueError: the file is short, has trailing bytes, or fails its checksum.
    """
    scan = scan_segment(data, start=0)
    if scan.bad_offset is not None or len(scan.records) != 1 or scan.valid_end != len(data):
        raise ValueError(f"not one checksummed record ({scan.reason or 'trailing bytes'})")
    return bytes(scan.records[0][1])


@dataclass(slots=True)
class ScanResult:
    """What :func:`scan_segment` found.

    ``records`` holds ``(offset, payload)`` of every valid record in order; ``valid_end``
    is the offset just after the last valid record. When the file ends in damage,
    ``bad_offset`` says where, ``reason`` why, and ``corrupt`` tells a torn tail
    (``False``: only garbage or zeros follow) from corruption (``True``: a valid record
    follows the damage, so data would be lost by truncating).
    """

    records: list[tuple[int, memoryview]] = field(default_factory=list)
    valid_end: int = HEADER_SIZE
    bad_offset: int | None = None
    reason: str = ""
    corrupt: bool = False


def _check_frame(buf: memoryview, pos: int, end: int, salt: int) -> str | None:
    """Return None if a valid frame starts at ``pos``, else the reason it is not."""
    if end - pos < FRAME_SIZE:
        return "partial record header"
    length, crc = FRAME.unpack_from(buf, pos)
    if length == 0:
        return "zero-length record"
    if length > MAX_RECORD_BYTES or pos + FRAME_SIZE + length > end:
        return "record length runs past the end of the file"
    start = pos + FRAME_SIZE
    if zlib.crc32(buf[start : start + length], zlib.crc32(buf[pos : pos + 4], salt)) != crc:
        return "checksum mismatch"
    return None


def _valid_record_after(buf: memoryview, data: bytes, pos: int, end: int, salt: int) -> int | None:
    """Offset of a valid framed event record starting after ``pos``, if there is one."""
    for prefix in PAYLOAD_PREFIXES:
        search = pos + 1 + FRAME_SIZE
        while True:
            hit = data.find(prefix, search, end)
            if hit < 0:
                break
            candidate = hit - FRAME_SIZE
            if _check_frame(buf, candidate, end, salt) is None:
                return candidate
            search = hit + 1
    return None


def scan_segment(data: bytes, *, start: int = HEADER_SIZE, salt: int = 0) -> ScanResult:
    """Walk the records of a segment image (the whole file's bytes, header included).

    ``salt`` is the segment's (:func:`read_header`). Never raises for damaged data: the
    result describes the damage (docs/format.md section 4). A zero-filled tail counts as a torn
    tail. Bytes that look like a record but were never framed with this segment's salt
    (a user's value holding a crafted frame) do not count as "valid data follows".
    """
    buf = memoryview(data)
    end = len(data)
    result = ScanResult(valid_end=start)
    pos = start
    records = result.records
    unpack = FRAME.unpack_from
    crc32 = zlib.crc32
    while pos < end:
        if end - pos >= FRAME_SIZE:
            length, crc = unpack(buf, pos)
            body = pos + FRAME_SIZE
            if 0 < length <= end - body:
                payload = buf[body : body + length]
                if crc32(payload, crc32(buf[pos : pos + 4], salt)) == crc:
                    records.append((pos, payload))
                    pos = body + length
                    continue
        reason = _check_frame(buf, pos, end, salt) or "invalid record"
        result.bad_offset = pos
        result.valid_end = pos
        if data.count(0, pos, end) == end - pos:
            result.reason = "zero-filled tail"
        else:
            result.reason = reason
            result.corrupt = _valid_record_after(buf, data, pos, end, salt) is not None
        return result
    result.valid_end = pos
    return result
