"""Read-only access to a store directory that another process owns and writes.

What a follower reads (formats: docs/format.md): the segment files (§1-§3), the snapshot
files (§5), the owner's ``triggers.cbor`` (§7), and ``/proc/locks`` to name the process that
holds the owner's ``LOCK``. Nothing here writes, truncates, renames or locks any of the
owner's files: a record that is not complete yet (the owner is still writing it, or a crashed
owner left a torn tail that its next open will cut off) is simply not visible yet, and is
read again later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import cbor2

from evstate.backends.file.diskio import DiskIO
from evstate.errors import CorruptionError
from evstate.events import LogEntry, RecordDecodeError, decode_entry
from evstate.backends.file.segment import (
    HEADER_SIZE,
    SEGMENT_NAME_RE,
    decode_header,
    scan_segment,
    unframe_single,
)
from evstate.backends.file.snapshot import Snapshot, SnapshotError, list_snapshots, read_snapshot

__all__ = [
    "Progress",
    "SegmentTail",
    "list_segments",
    "newest_snapshot",
    "owner_pid",
    "read_owner_triggers",
]

log = logging.getLogger("evstate")

# ``progress(done, total)``: units of work done so far out of ``total`` (bytes here).
Progress = Callable[[int, int], None]

_LOCK_FILE = "LOCK"  # evstate/store.py
_TRIGGERS_FILE = "triggers.cbor"  # evstate/triggers.py, docs/format.md §7
_IO = DiskIO()  # only its read methods are used


def list_segments(directory: str) -> list[tuple[int, str]]:
    """``(first_revision, path)`` of every segment file of ``directory``, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = SEGMENT_NAME_RE.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def newest_snapshot(
    directory: str, *, at_or_before: int | None = None, notes: list[str] | None = None
) -> Snapshot | None:
    """The newest valid snapshot (at or before ``at_or_before`` if given), or ``None``.

    A snapshot that does not read back (bad checksum, or deleted by the owner's compaction
    while being read) is skipped and, if ``notes`` is given, noted there; older ones are
    tried. ``.snap.tmp`` files are the owner's business and are never touched.
    """
    for info in reversed(list_snapshots(directory, _IO)):
        if at_or_before is not None and info.revision > at_or_before:
            continue
        try:
            return read_snapshot(info.path, _IO)
        except SnapshotError as exc:
            if notes is not None:
                notes.append(f"skipped snapshot: {exc}")
    return None


def owner_pid(directory: str) -> int | None:
    """The pid holding the store's writer lock (``flock`` on ``LOCK``), or ``None``.

    Read from ``/proc/locks`` (Linux), so the lock itself is never touched: taking it, even
    shared and for an instant, could make the owner's own open fail.
    """
    try:
        st = os.stat(os.path.join(directory, _LOCK_FILE))
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 11554 fe:00:2148236 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            try:
                return int(fields[4])
            except ValueError:
                return None
    return None


def read_owner_triggers(directory: str) -> dict[str, dict[str, Any]]:
    """The owner's ``triggers.cbor``: ``{name: {"cursor": int, "parked": [...]}}``.

    Empty when the file is missing; an unreadable file is logged and read as empty (the
    cursors in snapshots and batch records remain, as for the owner).
    """
    path = os.path.join(directory, _TRIGGERS_FILE)
    try:
        data = cbor2.loads(unframe_single(_IO.read_file(path)))
    except FileNotFoundError:
        return {}
    except Exception as exc:  # cbor2 raises several types; a bad file must not stop reads
        log.warning("evstate follower: ignoring unreadable %s: %s", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("version") != 1:
        return {}
    triggers = data.get("triggers")
    return dict(triggers) if isinstance(triggers, dict) else {}


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
                first = decode_header(header)
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
        scan = scan_segment(data, start=0)
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
