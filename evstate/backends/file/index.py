"""Reading the retained log: a lazy per-key index, event lookup, and streaming scans.

The index (built on first use by scanning the retained segments once, then kept current
by every append) maps:

- each revision to ``(segment, offset, timestamp)`` in three flat arrays, 24 bytes an
  event, so a revision's record is one ``pread`` away and a time bisects to a revision;
- each ``(scope, key)`` to the sorted list of its revisions, so ``history()`` of one key
  reads just that key's records.

Threading: :meth:`LogIndex.add` runs under the store's write lock; readers take the
index's own lock only to copy what they need.
"""

from __future__ import annotations

import bisect
import os
import threading
from array import array
from collections.abc import Iterator

from evstate.backends.file.segment import (
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    read_header,
    scan_segment,
)
from evstate.errors import CorruptionError
from evstate.events import EventRecord, RecordDecodeError, decode_entry

__all__ = ["LogIndex", "read_record_at", "scan_records", "segment_salt"]


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


def read_record_at(
    path: str, offset: int, revision: int | None = None, salt: int | None = None
) -> EventRecord:
    """Read and check the event framed at ``offset`` of segment ``path``.

    For a batch record, ``revision`` picks the event (default: the first). ``salt`` is the
    segment's (read from its header when not given).

    Raises:
        CorruptionError: the frame or its payload is bad.
    """
    if salt is None:
        salt = segment_salt(path)
    with open(path, "rb") as f:
        head = os.pread(f.fileno(), FRAME_SIZE, offset)
        if len(head) < FRAME_SIZE:
            raise CorruptionError("record header cut short", path=path, offset=offset)
        length, _crc = FRAME.unpack(head)
        data = head + os.pread(f.fileno(), length, offset + FRAME_SIZE)
    scan = scan_segment(data, start=0, salt=salt)
    if scan.bad_offset is not None or len(scan.records) != 1:
        raise CorruptionError(f"bad record ({scan.reason})", path=path, offset=offset)
    try:
        records = decode_entry(scan.records[0][1]).records
    except RecordDecodeError as exc:
        raise CorruptionError(str(exc), path=path, offset=offset) from None
    for record in records:
        if revision is None or record.revision == revision:
            return record
    raise CorruptionError(f"revision {revision} is not in this record", path=path, offset=offset)


def scan_records(path: str, *, upto: int | None = None) -> Iterator[tuple[int, EventRecord]]:
    """Yield ``(offset, record)`` of every valid record of a segment file, in order.

    Reads the segment in one piece (segments are bounded by ``segment_size_bytes``), so a
    scan over many segments holds one segment in memory at a time. Stops at the first
    damage (recovery already decided whether that is a torn tail) or past ``upto``.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        salt = read_header(data)[1]
    except ValueError as exc:
        raise CorruptionError(f"bad segment header: {exc}", path=path, offset=0) from None
    for offset, payload in scan_segment(data, start=HEADER_SIZE, salt=salt).records:
        try:
            records = decode_entry(payload).records
        except RecordDecodeError as exc:
            raise CorruptionError(str(exc), path=path, offset=offset) from None
        for record in records:
            if upto is not None and record.revision > upto:
                return
            yield offset, record


class LogIndex:
    """Revision, time and per-key index over the retained segments (see module doc)."""

    def __init__(self) -> None:
        self.first = 1  # revision at position 0 of the arrays
        self._segments = array("Q")  # segment first revision, per event
        self._offsets = array("Q")
        self._timestamps = array("q")
        self._keys: dict[str, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def build(cls, segments: list[tuple[int, str]], head: int) -> LogIndex:
        """Scan ``segments`` (oldest first) up to revision ``head`` into a new index."""
        index = cls()
        index.first = segments[0][0] if segments else head + 1
        for first, path in segments:
            for offset, record in scan_records(path, upto=head):
                index.add(
                    record.revision, record.timestamp, record.scope, record.key, first, offset
                )
        return index

    def add(self, revision: int, timestamp: int, scope: str, key: str, seg: int, off: int) -> None:
        """Index one appended record (revisions must arrive in order, gap-free)."""
        with self._lock:
            if revision != self.first + len(self._offsets):
                raise AssertionError(f"index out of step at revision {revision}")
            self._segments.append(seg)
            self._offsets.append(off)
            self._timestamps.append(timestamp)
            keys = self._keys.get(scope)
            if keys is None:
                self._keys[scope] = {key: [revision]}
            else:
                revs = keys.get(key)
                if revs is None:
                    keys[key] = [revision]
                else:
                    revs.append(revision)

    @property
    def last(self) -> int:
        """The newest indexed revision (``first - 1`` when empty)."""
        return self.first + len(self._offsets) - 1

    def location(self, revision: int) -> tuple[int, int]:
        """``(segment first revision, offset)`` of ``revision``; KeyError if not indexed."""
        i = revision - self.first
        if i < 0 or i >= len(self._offsets):
            raise KeyError(revision)
        return self._segments[i], self._offsets[i]

    def timestamp(self, revision: int) -> int:
        """The timestamp of an indexed revision."""
        return self._timestamps[revision - self.first]

    def revision_at_time(self, ms: int) -> int:
        """The newest revision with a timestamp at or before ``ms`` (``first - 1`` if none)."""
        with self._lock:
            return self.first + bisect.bisect_right(self._timestamps, ms) - 1

    def first_revision_from_time(self, ms: int) -> int:
        """The oldest revision with a timestamp at or after ``ms``."""
        with self._lock:
            return self.first + bisect.bisect_left(self._timestamps, ms)

    def key_revisions(self, scope: str, key: str, low: int, high: int) -> list[int]:
        """Revisions of ``scope/key`` within ``[low, high]``, oldest first."""
        with self._lock:
            revs = self._keys.get(scope, {}).get(key)
            if not revs:
                return []
            return revs[bisect.bisect_left(revs, low) : bisect.bisect_right(revs, high)]
