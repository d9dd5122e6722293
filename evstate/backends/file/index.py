"""Reading the retained log: a lazy per-key index, event lookup, and streaming scans.

The index (built on first use, then kept current by every append) holds one
:class:`~evstate.backends.file.segment_part.SegmentPart` per segment, so:

- each revision maps to ``(segment, offset, timestamp)`` (12 bytes an event in arrays per
  segment), so a revision's record is one ``pread`` away and a time bisects to a revision;
- each ``(scope, key)`` maps, by a 32-bit hash, to its revisions, so ``history()`` of one
  key reads just that key's records (and, rarely, one of a key with the same hash, which it
  drops).

Building it reads each segment's key index file (docs/format.md section 11) where one
checks out against its segment, and the segment's records only where none does (the
records appended after the file was written, a segment sealed by a crashed writer, a
damaged file). So after a clean close it reads no record at all; a file's sorted key
entries (8 bytes an event) are kept as they are and bisected.

Threading: :meth:`LogIndex.add` runs under the store's write lock; readers take the
index's own lock only to copy what they need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from evstate.backends.file.key_index import key_hash
from evstate.backends.file.layout import MAX_RECORD_BYTES
from evstate.backends.file.segment import (
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    read_header,
    segment_name,
)
from evstate.backends.file.segment_part import SegmentPart, index_segment, load_segment_part
from evstate.errors import CorruptionError
from evstate.events import EventRecord, RecordDecodeError, decode_entry

__all__ = ["LogIndex", "RecordVanished", "read_record_at", "scan_records", "segment_salt"]

log = logging.getLogger("evstate")


class RecordVanished(Exception):
    """The segment holding ``revision`` was deleted (compacted) while it was read."""

    def __init__(self, revision: int) -> None:
        super().__init__(revision)
        self.revision = revision


def segment_salt(path: str) -> int:
    """The record-checksum salt of segment ``path``, from its header.

    Raises:
        CorruptionError: the header is bad.
    """
    with open(path, "rb") as f:
        header = os.pread(f.fileno(), HEADER_SIZE, 0)
    try:
        return read_header(header)[1]
    except ValueError as exc:
        raise CorruptionError(f"bad segment header: {exc}", path=path, offset=0) from None


_FIRST_READ = 1024  # bytes read for one record at first: a typical record and its frame


def read_record_at(
    path: str,
    offset: int,
    revision: int | None = None,
    salt: int | None = None,
    fd: int | None = None,
) -> EventRecord:
    """Read and check the event framed at ``offset`` of segment ``path``.

    For a batch record, ``revision`` picks the event (default: the first). ``salt`` is the
    segment's (read from its header when not given); ``fd``, the segment opened already
    (reading many records of one segment opens it once).

    Raises:
        CorruptionError: the frame or its payload is bad.
    """
    if salt is None:
        salt = segment_salt(path)
    if fd is None:
        with open(path, "rb") as f:
            return read_record_at(path, offset, revision, salt, f.fileno())
    data = os.pread(fd, _FIRST_READ, offset)  # most records fit: one system call
    if len(data) < FRAME_SIZE:
        raise CorruptionError("record header cut short", path=path, offset=offset)
    length, crc = FRAME.unpack_from(data)
    if length == 0 or length > MAX_RECORD_BYTES:
        raise CorruptionError(f"bad record (impossible length {length})", path=path, offset=offset)
    end = FRAME_SIZE + length
    if len(data) < end:
        data += os.pread(fd, end - len(data), offset + len(data))
        if len(data) < end:
            raise CorruptionError("record cut short", path=path, offset=offset)
    payload = memoryview(data)[FRAME_SIZE:end]
    # the checksum rule of format.md section 3 (the salt, the length field, the payload)
    if zlib.crc32(payload, zlib.crc32(data[:4], salt)) != crc:
        raise CorruptionError("bad record (checksum mismatch)", path=path, offset=offset)
    try:
        records = decode_entry(payload).records
    except RecordDecodeError as exc:
        raise CorruptionError(str(exc), path=path, offset=offset) from None
    for record in records:
        if revision is None or record.revision == revision:
            return record
    raise CorruptionError(f"revision {revision} is not in this record", path=path, offset=offset)


_READ_CHUNK = 1 << 20  # bytes a scan reads at a time


def scan_records(
    path: str, *, upto: int | None = None, start: int = HEADER_SIZE
) -> Iterator[tuple[int, EventRecord]]:
    """Yield ``(offset, record)`` of every valid record of a segment file, in order.

    Reads from ``start`` (the offset of a record: one a scan or the index found) in chunks
    of 1 MiB, so a scan that stops early (``upto``: past that revision) reads little
    beyond it, and memory holds one chunk and one record at a time. Stops at the first
    damage (recovery already decided whether that is a torn tail).
    """
    with open(path, "rb") as f:
        try:
            salt = read_header(f.read(HEADER_SIZE))[1]
        except ValueError as exc:
            raise CorruptionError(f"bad segment header: {exc}", path=path, offset=0) from None
        f.seek(start)
        buf, base, pos = b"", start, 0  # buf[pos] is at file offset base + pos
        while True:
            if len(buf) - pos < FRAME_SIZE:
                chunk = f.read(_READ_CHUNK)
                if not chunk:
                    return
                buf, base, pos = buf[pos:] + chunk, base + pos, 0
                continue
            length, crc = FRAME.unpack_from(buf, pos)
            end = pos + FRAME_SIZE + length
            if end > len(buf):
                if length == 0 or length > MAX_RECORD_BYTES:
                    return  # damage: the frame cannot be read on
                chunk = f.read(max(_READ_CHUNK, end - len(buf)))
                if not chunk:
                    return  # a torn tail
                buf, base, pos = buf[pos:] + chunk, base + pos, 0
                continue
            payload = memoryview(buf)[pos + FRAME_SIZE : end]
            if length == 0 or zlib.crc32(payload, zlib.crc32(buf[pos : pos + 4], salt)) != crc:
                return  # damage (recovery decided what it is)
            offset = base + pos
            try:
                records = decode_entry(payload).records
            except RecordDecodeError as exc:
                raise CorruptionError(str(exc), path=path, offset=offset) from None
            for record in records:
                if upto is not None and record.revision > upto:
                    return
                yield offset, record
            pos = end


class LogIndex:
    """Revision, time and per-key index over the retained segments (see module doc).

    ``loaded_files`` counts the segments whose key index file was used, ``scanned_bytes``
    the segment bytes read record by record: how it was built, for tests and figures.
    """

    def __init__(self) -> None:
        self.first = 1  # the oldest revision indexed (once there is one)
        self.loaded_files = 0
        self.scanned_bytes = 0
        self._parts: list[SegmentPart] = []
        self._firsts: list[int] = []  # each part's first revision
        self._first_times: list[int] = []  # each part's first timestamp
        self._count = 0
        self._lock = threading.Lock()

    @classmethod
    def build(cls, segments: list[tuple[int, str]], head: int) -> LogIndex:
        """Index ``segments`` (oldest first) up to revision ``head``.

        Raises:
            CorruptionError: a segment before the newest ends early or is damaged, or
                revisions are missing between segments.
            FileNotFoundError: a segment was deleted (compacted) meanwhile.
        """
        index = cls()
        index.first = segments[0][0] if segments else head + 1
        for i, (first, path) in enumerate(segments):
            if first > head:
                break
            next_first = segments[i + 1][0] if i + 1 < len(segments) else None
            part, used_file, scanned = load_segment_part(first, path, next_first, head)
            index.loaded_files += used_file
            index.scanned_bytes += scanned
            if part.count:
                if part.first != index.last + 1:
                    raise CorruptionError(
                        f"revision gap: the segment starts at {part.first}, "
                        f"expected {index.last + 1}",
                        path=path,
                    )
                index._append(part)
            must_reach = head if next_first is None else min(next_first - 1, head)
            if next_first is not None and part.last < must_reach:  # the newest may be torn
                raise CorruptionError(
                    f"segment ends at revision {part.last}, before revision {must_reach}",
                    path=path,
                )
        return index

    def _append(self, part: SegmentPart) -> None:
        self._parts.append(part)
        self._firsts.append(part.first)
        self._first_times.append(part.timestamps[0])
        self._count += part.count

    def add(self, revision: int, timestamp: int, scope: str, key: str, seg: int, off: int) -> None:
        """Index one appended record (revisions must arrive in order, gap-free)."""
        with self._lock:
            if revision != self.first + self._count:
                raise AssertionError(f"index out of step at revision {revision}")
            parts = self._parts
            if parts and parts[-1].first == seg:
                parts[-1].add(revision, timestamp, scope, key, off)
                self._count += 1
                return
            if seg != revision:
                raise AssertionError(f"index out of step at revision {revision} (segment {seg})")
            part = SegmentPart(seg)
            part.add(revision, timestamp, scope, key, off)
            self._append(part)

    @property
    def last(self) -> int:
        """The newest indexed revision (``first - 1`` when empty)."""
        return self.first + self._count - 1

    def _part(self, revision: int) -> SegmentPart:
        if not self.first <= revision < self.first + self._count:
            raise KeyError(revision)
        return self._parts[bisect_right(self._firsts, revision) - 1]

    def location(self, revision: int) -> tuple[int, int]:
        """``(segment first revision, offset)`` of ``revision``; KeyError if not indexed."""
        with self._lock:
            part = self._part(revision)
            return part.first, part.offsets[revision - part.first]

    def timestamp(self, revision: int) -> int:
        """The timestamp of an indexed revision."""
        with self._lock:
            part = self._part(revision)
            return part.timestamps[revision - part.first]

    def revision_at_time(self, ms: int) -> int:
        """The newest revision with a timestamp at or before ``ms`` (``first - 1`` if none)."""
        with self._lock:
            i = bisect_right(self._first_times, ms) - 1
            if i < 0:
                return self.first - 1
            part = self._parts[i]
            return part.first + bisect_right(part.timestamps, ms) - 1

    def first_revision_from_time(self, ms: int) -> int:
        """The oldest revision with a timestamp at or after ``ms``."""
        with self._lock:
            i = bisect_left(self._first_times, ms) - 1  # timestamps never decrease
            if i < 0:
                return self.first
            part = self._parts[i]
            return part.first + bisect_left(part.timestamps, ms)

    def key_locations(
        self, scope: str, key: str, low: int, high: int
    ) -> list[tuple[int, int, int, bool]]:
        """Where the revisions of ``scope/key`` within ``[low, high]`` may be, oldest first.

        Each is ``(revision, segment first revision, offset, found in a key index file)``:
        candidates, found by the key's hash (:meth:`key_records` keeps the key's own).
        """
        hashed = key_hash(scope, key)
        found = []
        with self._lock:
            for part in self._parts:
                if part.first > high:
                    break
                if part.last < low:
                    continue
                first, offsets, from_file = part.first, part.offsets, part.table_records
                for revision in part.revisions(hashed):
                    if low <= revision <= high:
                        at = revision - first
                        found.append((revision, first, offsets[at], at < from_file))
        return found

    def key_records(
        self, directory: str, scope: str, key: str, low: int, high: int, salts: dict[str, int]
    ) -> list[EventRecord]:
        """The records of ``scope/key`` within ``[low, high]``, read and checked, oldest first.

        Each candidate (:meth:`key_locations`) is read from its segment and checked
        (checksum, revision), and kept if it is of this key: the key index files only
        narrow the search, the log answers. If a record found through one is not where it
        says, that segment is read in full instead and the read repeated. ``salts`` caches
        each segment's checksum salt by path.

        Raises:
            RecordVanished: a segment was deleted (compacted) while being read.
            CorruptionError: a record (found by reading its segment) is damaged.
        """
        while True:  # each retry has one key index file fewer to go wrong
            records = []
            with contextlib.ExitStack() as files:
                opened: dict[str, int] = {}  # each segment opened once per call
                paths: dict[int, str] = {}
                for revision, first, offset, from_file in self.key_locations(scope, key, low, high):
                    path = paths.get(first)
                    if path is None:
                        path = paths[first] = os.path.join(directory, segment_name(first))
                    try:
                        salt = salts.get(path)
                        if salt is None:
                            salt = salts[path] = segment_salt(path)
                        fd = opened.get(path)
                        if fd is None:
                            fd = opened[path] = files.enter_context(open(path, "rb")).fileno()
                        record = read_record_at(path, offset, revision, salt, fd)
                    except FileNotFoundError:
                        raise RecordVanished(revision) from None
                    except CorruptionError as exc:
                        if not from_file:
                            raise
                        log.warning("evstate: a key index disagrees with its segment (%s)", exc)
                        self.reindex_segment(first, path)
                        break
                    if record.scope == scope and record.key == key:  # else another key's
                        records.append(record)
                else:
                    return records

    def reindex_segment(self, first: int, path: str) -> None:
        """Replace what segment ``first``'s key index file gave with its records, read.

        Raises:
            CorruptionError: the segment holds fewer of those revisions than the file said.
        """
        with self._lock:
            i = bisect_right(self._firsts, first) - 1
            part = self._parts[i] if i >= 0 and self._firsts[i] == first else None
            covered = part.table_records if part is not None else 0
        if part is None or not covered:
            return
        fresh = SegmentPart(first)
        index_segment(fresh, path, start=HEADER_SIZE, upto=first + covered - 1)
        if fresh.count != covered:
            raise CorruptionError(
                f"segment ends at revision {fresh.last}, before revision {first + covered - 1}",
                path=path,
            )
        with self._lock:  # the records appended meanwhile stay, after the re-read ones
            fresh.offsets.extend(part.offsets[covered:])
            fresh.timestamps.extend(part.timestamps[covered:])
            for hashed, revisions in part.keys.items():
                fresh.keys.setdefault(hashed, []).extend(revisions)
            self._parts[i] = fresh
