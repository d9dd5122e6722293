"""Read-only access to the files of a store directory another process owns and writes.

:class:`SegmentTail` reads the complete records of one segment as the owner appends them;
:func:`newest_snapshot` finds the newest valid snapshot (formats: docs/format.md). Nothing
here writes, truncates, renames or locks any of the owner's files: a record that is not
complete yet (the owner is still writing it, or a crashed owner left a torn tail that its
next open will cut off) is simply not visible yet, and is read again later.
"""

from __future__ import annotations

import logging
import os

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.segment import HEADER_SIZE, read_header, scan_segment
from evstate.backends.file.snapshot import Snapshot, SnapshotError, list_snapshots, read_snapshot
from evstate.errors import CorruptionError
from evstate.events import LogEntry, RecordDecodeError, decode_entry

__all__ = ["SegmentTail", "newest_snapshot"]

log = logging.getLogger("evstate")

_IO = DiskIO()  # only its read methods are used


def newest_snapshot(directory: str, *, at_or_before: int | None = None) -> Snapshot | None:
    """The newest valid snapshot (at or before ``at_or_before`` if given), or ``None``.

    A snapshot that does not read back (bad checksum, or deleted by the owner's compaction
    while being read) is skipped and older ones are tried. ``.snap.tmp`` files are the
    owner's business and are never touched.
    """
    for info in reversed(list_snapshots(directory, _IO)):
        if at_or_before is not None and info.revision > at_or_before:
            continue
        try:
            return read_snapshot(info, _IO)
        except SnapshotError:
            continue
    return None


class SegmentTail:
    """A read position in one segment file: the offset of the next record to read.

    The file is opened read-only once, so a segment the owner's compaction deletes while it
    is being read stays readable to the end. :meth:`read` returns only complete,
    checksummed records; anything after them is left for a later call.
    """

    def __init__(self, first: int, path: str) -> None:
        """Open segment ``path`` (named for revision ``first``) read-only.

        Raises:
            FileNotFoundError: the segment is gone (compacted, or a crashed roll removed).
        """
        self.first = first
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.offset = 0
        self.salt = 0  # the segment's record-checksum salt, read with its header
        self.stalled: str | None = None  # why the bytes after ``offset`` are not visible
        self.corrupt = False  # a valid record follows damage: not a write in progress

    def size(self) -> int:
        """The segment's current size in bytes."""
        return os.fstat(self.fd).st_size

    def replaced(self) -> bool:
        """True when ``path`` no longer names the file this tail reads."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return True

    def read(self) -> list[tuple[int, LogEntry]]:
        """Every complete record after the position, as ``(offset, entry)``; advances.

        Raises:
            CorruptionError: a bad segment header, or a checksummed record that does not
                decode (both are damage, never a write in progress).
        """
        size = self.size()
        if size <= self.offset:
            return []
        if self.offset == 0:
            if size < HEADER_SIZE:
                return []  # the owner is creating this segment
            header = os.pread(self.fd, HEADER_SIZE, 0)
            try:
                first, self.salt = read_header(header)
            except ValueError as exc:
                if header.count(0) == HEADER_SIZE:
                    return []  # header not written yet (a crashed roll is removed by the owner)
                raise CorruptionError(
                    f"bad segment header: {exc}", path=self.path, offset=0
                ) from None
            if first != self.first:
                raise CorruptionError(
                    f"segment header says first revision {first}, name says {self.first}",
                    path=self.path,
                    offset=0,
                )
            self.offset = HEADER_SIZE
        data = os.pread(self.fd, size - self.offset, self.offset)
        scan = scan_segment(data, start=0, salt=self.salt)
        entries = []
        for relative, payload in scan.records:
            try:
                entry = decode_entry(payload)
            except RecordDecodeError as exc:
                raise CorruptionError(
                    str(exc), path=self.path, offset=self.offset + relative
                ) from None
            entries.append((self.offset + relative, entry))
        self.offset += scan.valid_end
        self.stalled = None if scan.bad_offset is None else scan.reason
        self.corrupt = scan.corrupt
        return entries

    def sync(self) -> None:
        """``fdatasync`` the segment through the read-only descriptor (never blocks writes).

        Used before a follower's cursor file is written, so that a cursor never covers a
        record an OS crash could still take back. Errors are logged, not raised.
        """
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            log.warning("evstate follower: fdatasync of %s failed: %s", self.path, exc)

    def close(self) -> None:
        """Close the descriptor. Idempotent."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
