"""The owner's key index files: one per sealed segment, and one for the open segment at close.

Only the process holding the directory's lock writes them (through its
:class:`~evstate.backends.file.log.SegmentLog`); readers, followers included, only read
them (:func:`~evstate.backends.file.segment_part.load_segment_part`). When:

- **a segment is sealed** (a roll: it is fsynced), a background thread reads it and
  encodes its index; the file is written by the next roll (which waits for it if it is not
  ready, so at most one sealed segment's index is ever pending), or by a clean close;
- **a clean close** (the log flushed) also indexes the open segment's records so far,
  starting from its previous index file, so the next open reads no record to answer
  ``history()``;
- **at open**, leftover ``.keys.tmp`` files and index files without a segment are removed,
  and each sealed segment's index file is checked in the background; a missing or bad one
  is rebuilt from the segment and written by the next roll or close (a close does not wait
  for the checks still queued: the next open does them);
- **compaction** writes the pending index of the segment sealed last, and removes a
  segment's index file just before the segment.

Every file is written atomically through :class:`~evstate.backends.file.diskio.DiskIO`
(``.keys.tmp``, fsync, rename, directory fsync), and covers only bytes already fsynced. A
file that cannot be written is logged and skipped: the log never depends on it. The
background thread does no I/O through the DiskIO layer: every write happens in a call the
owner makes (a roll, compaction, close), so a fault there surfaces in that call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.key_index import KeyIndexError, key_index_path, read_key_index
from evstate.backends.file.layout import KEY_INDEX_NAME_RE, KEY_INDEX_TMP_SUFFIX, segment_name
from evstate.backends.file.segment import HEADER_SIZE
from evstate.backends.file.segment_part import SegmentPart, encode_segment_part, index_segment
from evstate.errors import CorruptionError

__all__ = ["KeyIndexWriter", "build_key_index"]

log = logging.getLogger("evstate")

# Checked and rebuilt index files waiting for a roll or close to write them: past this many
# bytes the checks pause (a store that is only read writes them at its close).
_READY_LIMIT = 64 << 20


def build_key_index(first: int, path: str, next_first: int | None) -> bytes | None:
    """The key index file of segment ``path`` (named ``first``), or None if none is due.

    None when its index file is current (covers the whole segment), when the segment holds
    no record, or when a record in it is damaged (readers report that). An existing index
    file that checks out is extended rather than rebuilt. ``next_first`` is the next
    segment's first revision (None for the newest).

    Raises:
        OSError: the segment cannot be read (FileNotFoundError: it was compacted).
        CorruptionError: its header is bad, or its revisions are out of order.
    """
    try:
        table = read_key_index(path, first, next_first=next_first)
    except KeyIndexError as exc:
        log.warning("evstate: rebuilding a key index (%s)", exc)
        table = None
    size = os.path.getsize(path)
    if table is not None and table.covered_size == size:
        return None
    part = SegmentPart(first)
    start = HEADER_SIZE
    if table is not None:
        part.adopt(table, table.records)
        start = table.covered_size
    end = index_segment(part, path, start=start, upto=None)
    if end != size or not part.count:
        return None
    if next_first is not None and part.last != next_first - 1:
        return None
    return encode_segment_part(part, path, end)


@dataclass(slots=True)
class _Job:
    """A segment to index in the background.

    ``waited``: the next roll or close waits for it (a sealed segment); the checks queued
    at open are not waited for.
    """

    first: int
    path: str
    next_first: int | None
    waited: bool
    part: SegmentPart | None = None  # the writer's own record of it: nothing to read


class KeyIndexWriter:
    """Keeps the key index files of one store directory (the owner's; see the module doc).

    Thread-safe. Lock order: the store's write lock, ``SegmentLog``'s I/O lock, then
    ``_file_lock`` (held while a file is written or removed), then ``_cond``.
    """

    def __init__(self, directory: str, io: DiskIO) -> None:
        self.directory = directory
        self.io = io
        self._file_lock = threading.Lock()
        self._cond = threading.Condition()  # guards the fields below
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._ready: dict[int, tuple[str, bytes, bool]] = {}  # built, not written: path,
        # data, waited (a sealed segment's, not a check's)
        self._ready_bytes = 0
        self._doomed: set[int] = set()  # segments compaction deleted
        self._thread: threading.Thread | None = None
        self._closed = False
        self._live: SegmentPart | None = None  # the open segment, as the writer appends
        self._live_first = 0  # the open segment whose records are fed (0: none yet)

    # ---- the owner's calls ------------------------------------------------------------

    def start(self, segments: list[tuple[int, str]]) -> None:
        """After recovery: remove leftovers, then check the sealed segments' index files."""
        self._tidy(segments)
        jobs = [
            _Job(first, path, segments[i + 1][0], waited=False)
            for i, (first, path) in enumerate(segments[:-1])
        ]
        with self._cond:
            self._queue.extend(reversed(jobs))  # newest first: the oldest go at compaction
            self._ensure_thread()

    def record(
        self, revision: int, timestamp: int, scope: str, key: str, first: int, offset: int
    ) -> None:
        """Note a record the owner appended to segment ``first`` (store write lock held).

        The open segment's index is kept from these as they are written, so sealing it
        reads nothing back (re-reading and decoding a sealed segment would cost writers
        several microseconds per event of interpreter time). A segment whose first records
        this writer did not see (it was open before a reopen) is read back when sealed.
        """
        live = self._live
        if first != self._live_first:
            self._live_first = first
            live = self._live = SegmentPart(first) if offset == HEADER_SIZE else None
        if live is not None:
            live.add(revision, timestamp, scope, key, offset)

    def sealed(self, first: int, path: str, next_first: int) -> None:
        """Segment ``path`` was sealed (fsynced): index it in the background.

        First writes the index of the segment sealed before it (waiting for it if it is not
        built yet), so at most one is ever pending. Never raises.
        """
        self._wait(lambda: not self._waited_pending())
        self._write_ready(checks=1)  # a roll holds up writers: one rebuilt file at most
        live = self._live
        whole = live is not None and live.first == first and live.count == next_first - first
        with self._cond:
            if self._closed:
                return
            job = _Job(first, path, next_first, waited=True, part=live if whole else None)
            self._queue.appendleft(job)
            self._ensure_thread()
            self._cond.notify_all()  # a thread pausing its checks takes this one first

    def forget(self, segments: list[tuple[int, str]]) -> None:
        """Compaction deletes ``segments``: remove their index files first.

        Also writes the index of the segment sealed last (waiting for it), so readers that
        rebuild their index after the compaction find a file for every sealed segment. The
        caller deletes the segments next, then fsyncs the directory.

        Raises:
            OSError: an index file could not be removed.
        """
        firsts = {first for first, _ in segments}
        with self._cond:
            self._doomed |= firsts
            self._queue = deque(job for job in self._queue if job.first not in firsts)
            for first in firsts:
                self._take_ready(first)
        self._wait(lambda: not self._waited_pending())
        self._write_ready(checks=0)
        with self._file_lock:
            for first, path in segments:
                target = key_index_path(path, first)
                if self.io.exists(target):
                    self.io.remove(target)

    def close(self, newest: tuple[int, str, int] | None, *, wait_for_checks: bool = False) -> None:
        """A close: write the pending indexes, and index ``newest``. Never raises.

        ``newest`` is the open segment ``(first revision, path, last revision)``, all its
        records fsynced (None after a failure): its index covers its records so far, from
        this writer's own record of them when it saw them all (nothing is read back). The
        checks begun at open that have not started are dropped, unless ``wait_for_checks``.
        """
        with self._cond:
            if not wait_for_checks:
                self._queue = deque(job for job in self._queue if job.waited)
            self._cond.notify_all()
        while True:  # writing what is ready lets paused checks go on
            self._write_ready(checks=None)
            with self._cond:
                if self._ready:
                    continue
                if not self._queue and self._running is None:
                    self._closed = True
                    break
                self._cond.wait()  # the thread notifies when it finishes a job
        if newest is not None:
            first, path, last = newest
            live = self._live
            whole = live is not None and live.first == first and live.count == last - first + 1
            job = _Job(first, path, next_first=None, waited=True, part=live if whole else None)
            data = self._build(job)
            if data is not None:
                self._write(first, path, data)

    # ---- files ------------------------------------------------------------------------

    def _tidy(self, segments: list[tuple[int, str]]) -> None:
        """Remove ``.keys.tmp`` files and index files whose segment is gone."""
        present = {first for first, _ in segments}
        try:
            doomed = []
            for name in self.io.listdir(self.directory):
                match = KEY_INDEX_NAME_RE.match(name)
                unfinished = name.endswith(".keys" + KEY_INDEX_TMP_SUFFIX)
                if unfinished or (match is not None and int(match.group(1)) not in present):
                    doomed.append(name)
            for name in doomed:
                self.io.remove(os.path.join(self.directory, name))
            if doomed:
                self.io.fsync_dir(self.directory)
                log.info("evstate: removed %d stray key index file(s)", len(doomed))
        except OSError as exc:  # readers ignore them anyway
            log.warning("evstate: could not remove stray key index files: %s", exc)

    def _take_ready(self, first: int) -> tuple[str, bytes, bool] | None:
        found = self._ready.pop(first, None)
        if found is not None:
            self._ready_bytes -= len(found[1])
            self._cond.notify_all()
        return found

    def _write_ready(self, *, checks: int | None) -> None:
        """Write the built files of sealed segments, and ``checks`` rebuilt ones (None: all)."""
        with self._cond:
            firsts = sorted(self._ready)
        for first in firsts:
            with self._cond:
                found = self._ready.get(first)
                if found is None or not (found[2] or checks is None or checks > 0):
                    continue
                if not found[2] and checks is not None:
                    checks -= 1
                self._take_ready(first)
            self._write(first, found[0], found[1])

    def _write(self, first: int, path: str, data: bytes) -> None:
        target = key_index_path(path, first)
        with self._file_lock:
            with self._cond:
                if first in self._doomed:
                    return
            try:
                self.io.replace_file(target, data)
            except OSError as exc:
                log.warning("evstate: could not write the key index %s: %s", target, exc)
                tmp = target + KEY_INDEX_TMP_SUFFIX
                with contextlib.suppress(OSError):  # best effort: it holds disk space
                    if self.io.exists(tmp):
                        self.io.remove(tmp)

    # ---- the background thread ----------------------------------------------------------

    def _waited_pending(self) -> bool:
        if self._running is not None and self._running.waited:
            return True
        return any(job.waited for job in self._queue)

    def _wait(self, done: Callable[[], bool]) -> None:
        with self._cond:
            while not done():
                self._cond.wait()

    def _ensure_thread(self) -> None:
        if self._thread is None and self._queue:
            self._thread = threading.Thread(target=self._run, name="evstate-key-index", daemon=True)
            self._thread.start()

    def _next_job(self) -> _Job | None:
        """The next job (None: the queue is empty); checks wait while much is unwritten."""
        queue = self._queue
        while queue and not queue[0].waited and self._ready_bytes >= _READY_LIMIT:
            self._cond.wait()
        if not queue:
            self._thread = None  # with the check: a job queued later starts a thread
            self._cond.notify_all()
            return None
        job = self._running = queue.popleft()
        return job

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._cond:
                    job = self._next_job()
                if job is None:
                    return
                data = self._build(job)
                with self._cond:
                    self._running = None
                    if data is not None and job.first not in self._doomed:
                        self._ready[job.first] = (job.path, data, job.waited)
                        self._ready_bytes += len(data)
                    self._cond.notify_all()
        finally:
            with self._cond:
                if self._thread is me:  # killed by something unforeseen: nobody may wait forever
                    self._thread = self._running = None
                    self._queue.clear()
                    self._cond.notify_all()

    def _build(self, job: _Job) -> bytes | None:
        try:
            if job.part is not None and job.part.count:
                return encode_segment_part(job.part, job.path, os.path.getsize(job.path))
            return build_key_index(job.first, job.path, job.next_first)
        except FileNotFoundError:
            return None  # compacted meanwhile
        except (OSError, CorruptionError, ValueError) as exc:
            log.warning("evstate: could not index %s: %s", segment_name(job.first), exc)
            return None
        except Exception:  # a cache: never a reason for the log to fail
            log.exception("evstate: could not index %s", segment_name(job.first))
            return None
