"""Followers: a live, read-only view of a store directory that another process owns.

::

    from evstate.backends.follower.follower import follow

    with follow("./data") as follower:         # while a server or service owns ./data
        follower.get("users", "u1")            # the owner's state, kept current
        follower.history("users", "u1")        # audit, at(), events(), stats(), verify()
        @follower.trigger("mirror", scope="users", start="earliest")
        def mirror(event): ...                 # a projection with its own cursor file
        for event in follower.tail():          # new events as they are written
            ...

A follower never writes the owner's files (only its own trigger cursor files, under
``<store>/followers/`` by default), never takes the owner's ``LOCK``, and never blocks the
owner. It keeps up by waiting for the directory to change (``watchdog``: inotify on Linux)
or for a short poll interval (50 ms), whichever comes first: a write is visible to it within
100 ms of the owner's fsync (in practice about a millisecond; ``bench/bench_follower.py``).
A follower may see a write shortly *before* the owner's fsync returns, never one that is not
in the file yet.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from evstate.backends.file.cursors import read_cursor_file
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import FOLLOWERS_DIR, TRIGGERS_FILE
from evstate.backends.file.lock import owner_pid
from evstate.backends.file.restore import DIRECTORY_RESTORE
from evstate.backends.follower.cursors import FollowerCursors
from evstate.backends.follower.live import LiveLog, owner_cursor
from evstate.config_schema import DEFAULT_LISTING_IDLE_MS, DEFAULT_MAX_OPEN_LISTINGS
from evstate.core.audit import AuditMethods
from evstate.core.feed import RecordFeed
from evstate.core.lifecycle import Closable, wall_clock_ms
from evstate.core.listing import Listings
from evstate.core.log_source import Progress
from evstate.core.reads import TableReads
from evstate.core.replay import Scopes
from evstate.core.triggers.api import TriggerMethods
from evstate.core.triggers.manager import TriggerManager
from evstate.core.writes import encode_checked
from evstate.errors import StorageError
from evstate.events import Event, EventRecord

if TYPE_CHECKING:  # watchdog itself is imported when a follower starts watching
    from watchdog.observers.api import BaseObserver

__all__ = ["POLL_INTERVAL", "Follower", "follow"]

log = logging.getLogger("evstate")

POLL_INTERVAL = 0.05  # seconds between polls: the safety net under the directory watch
_IO = DiskIO()


def follow(path: str | os.PathLike[str], **options: Any) -> Follower:
    """Open the store directory ``path`` read-only, as a follower of its owner.

    ``options`` (keyword only): ``live``, ``watch``, ``cursor_dir``, ``poll_interval``,
    ``progress``, ``max_open_listings``, ``listing_idle_ms``, as below.

    ``live=False`` loads once and follows only when :meth:`Follower.refresh` is called (no
    background threads: what one-shot commands want). ``watch=False`` keeps up by polling
    every ``poll_interval`` seconds alone (for file systems whose changes the OS does not
    report, such as network mounts written by another host). ``cursor_dir`` is where follower
    triggers keep their cursor files (default ``<path>/followers``). ``progress(done,
    total)`` is called while the initial load reads the log (bytes). ``max_open_listings``
    and ``listing_idle_ms`` bound its ``list_entries`` listings, as the config options of
    the same names do for a store.

    Raises:
        StorageError: ``path`` is not an existing directory (nothing is created).
        CorruptionError: the owner's files are damaged beyond a torn tail.
    """
    return Follower(path, **options)


class Follower(Closable, TableReads, AuditMethods, TriggerMethods):
    """A read-only, live view of a store directory owned by another process.

    Reads (``get``, ``list``, ``list_values``, ``list_groups``) answer from memory, like the
    store's, and see the owner's writes once the follower has read them (:attr:`revision`).
    ``history``, ``events``, ``at``, ``restore_to``, ``stats`` and ``verify`` read the owner's
    retained files with the store's rules (the same code answers both). Triggers are
    projections with cursor files of their own (:meth:`trigger`). Thread-safe. Use
    :func:`follow` to open one; close it (or use ``with``).
    """

    _restore_writer = DIRECTORY_RESTORE

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        live: bool = True,
        watch: bool = True,
        cursor_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = POLL_INTERVAL,
        progress: Progress | None = None,
        max_open_listings: int = DEFAULT_MAX_OPEN_LISTINGS,
        listing_idle_ms: int = DEFAULT_LISTING_IDLE_MS,
    ) -> None:
        """Load the directory and start following it (see :func:`follow`)."""
        directory = os.path.abspath(os.fspath(path))
        if not os.path.isdir(directory):
            raise StorageError(f"no store directory at {directory}")
        self._path = directory
        self._closed = False
        self._live = LiveLog(directory, progress)
        self._table = self._live.table
        self._table_lock = self._live.lock
        self._clock = wall_clock_ms
        self._listings = Listings(max_open_listings, listing_idle_ms)
        self._source = self._live.timeline
        self._feed: RecordFeed = self._live.feed
        cursors = FollowerCursors(
            os.path.abspath(os.fspath(cursor_dir or os.path.join(directory, FOLLOWERS_DIR))),
            _IO,
            self._live.sync,
        )
        self._triggers = TriggerManager(self, cursors, enabled=True)
        if not live:  # nobody polls for the runners: they poll on their own, often
            self._triggers.delivery.idle = 0.05
        self._interval = poll_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        if live:
            self._observer = self._watch() if watch else None
            self._thread = threading.Thread(
                target=self._follow_loop, name="evstate-follower", daemon=True
            )
            self._thread.start()

    def _watch(self) -> BaseObserver | None:
        # Imported here: ``import evstate`` stays fast for programs that never follow.
        from watchdog.events import (
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        wake = self._wake

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                wake.set()

        observer = Observer()
        try:
            # Only changes: open/close events would fire on the follower's own reads.
            observer.schedule(
                Wake(),
                self._path,
                recursive=False,
                event_filter=[
                    FileModifiedEvent,
                    FileCreatedEvent,
                    FileDeletedEvent,
                    FileMovedEvent,
                ],
            )
            observer.start()
        except Exception as exc:  # e.g. inotify watch limit: polling alone still keeps up
            log.warning("evstate follower: cannot watch %s (%s); polling only", self._path, exc)
            return None
        return observer

    def _follow_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._live.poll()
            except Exception:  # never let the follower thread die; the next poll retries
                log.exception("evstate follower: poll failed")
                self._stop.wait(0.5)

    # ---- properties ---------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The store directory being followed."""
        return self._path

    @property
    def revision(self) -> int:
        """The newest revision the follower has read (0 for an empty store)."""
        return self._live.revision

    @property
    def timestamp(self) -> int | None:
        """The time (ms) of the newest event read, or ``None``."""
        return self._live.timestamp

    @property
    def problem(self) -> str | None:
        """Damage in the owner's files that stops the follower at :attr:`revision`, if any."""
        return self._live.problem

    # ---- keeping up ---------------------------------------------------------------------

    def _wait_past(self, revision: int, timeout: float) -> None:
        live = self._live
        self._feed.wait(lambda: live.revision > revision or live.closed, timeout)

    def refresh(self) -> int:
        """Read what the owner has written so far, now; returns :attr:`revision`."""
        self._check_open()
        self._live.poll()
        return self._live.revision

    def wait_for(self, revision: int, timeout: float | None = None) -> bool:
        """Wait until the follower has read ``revision``; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._live.revision < revision and not self._live.closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            step = 0.1 if remaining is None else min(remaining, 0.1)
            if self._thread is None:
                self._live.poll()
                time.sleep(min(step, 0.01))
            else:
                self._wait_past(self._live.revision, step)
        return self._live.revision >= revision

    # ---- live events ----------------------------------------------------------------------

    def tail(
        self,
        start: int | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        idle_timeout: float | None = None,
    ) -> Iterator[Event]:
        """Yield events as the owner writes them, from ``start`` (default: the next one).

        Blocks between events; ends when the follower is closed, or when ``idle_timeout``
        seconds pass without a new event.

        Raises:
            HistoryCompactedError: the events from ``start`` on (or, while this iterator
                lagged, some later ones) were compacted by the owner before being read.
        """
        self._check_open()
        position = self._live.revision if start is None else start - 1
        idle_since = time.monotonic()
        while not self._live.closed:
            head = self._live.revision
            if position >= head:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                if self._thread is None:
                    self._live.poll()
                    time.sleep(0.01)
                else:
                    self._wait_past(position, 0.25)
                continue
            for record in self._live.records(position + 1, head):
                position = record.revision
                if (scope is None or record.scope == scope) and (key is None or record.key == key):
                    idle_since = time.monotonic()
                    yield record.to_event()

    # ---- what the audit, the reads and the trigger runners need -------------------------

    def _audit_head(self) -> int:
        return self._live.revision

    def _live_state(self) -> tuple[int, Scopes]:
        with self._live.lock:
            return self._live.revision, self._live.table.scope_map()

    def _visible_revision(self) -> int:
        if self._thread is None:  # not live: read what is new on the runners' behalf
            self._live.poll()
        return self._live.revision

    def _records(self, low: int, high: int) -> Iterator[EventRecord]:
        return self._live.records(low, high)

    def _oldest_revision(self) -> int:
        return self._source.oldest_revision()

    def _encode_checked(self, value: Any) -> bytes:
        return encode_checked(value, None)  # never called: the context is read-only

    # ---- checks and numbers -----------------------------------------------------------------

    def verify(self, *, progress: Progress | None = None) -> builtins.list[str]:
        """Check the owner's files read-only; returns the problems (empty when healthy).

        The store's checks (every record checksum, revision continuity, every snapshot,
        newest snapshot + replay == full replay == this follower's state), up to
        :attr:`revision`; safe while the owner writes. A torn tail at the end of the newest
        segment is not a problem (the owner is writing it, or cuts it off at its next open).
        """
        problem = self._live.problem
        return ([problem] if problem else []) + super().verify(progress=progress)

    def stats(self) -> dict[str, Any]:
        """``Store.stats``'s numbers as seen from here, plus ``owner_pid`` and ``problem``.

        ``durable_revision`` is :attr:`revision`: the segment being read is fsynced first.
        """
        self._check_open()
        revision = self._live.revision
        self._live.sync()
        table = self._live.table
        result: dict[str, Any] = {
            "revision": revision,
            "durable_revision": revision,
            "keys": table.key_count(),
            "scopes": len(table.scopes()),
        }
        result.update(self._source.stats())
        result["owner_pid"] = owner_pid(self._path)
        result["watching"] = self._observer is not None
        result["problem"] = self._live.problem
        return result

    def _owner_cursor_file(self) -> tuple[dict[str, Any], dict[str, int]]:
        """The owner's ``triggers.cbor``: its cursors and its ``resets`` (empty if none)."""
        try:
            found = read_cursor_file(_IO, os.path.join(self._path, TRIGGERS_FILE))
        except (OSError, ValueError) as exc:  # a bad file must not stop reads
            log.warning("evstate follower: ignoring the owner's unreadable cursor file: %s", exc)
            return {}, {}
        return ({}, {}) if found is None else (dict(found[0]), dict(found[1]))

    def owner_triggers(self) -> dict[str, dict[str, Any]]:
        """The owner's triggers as its files show them: ``cursor``, ``lag``, ``parked``.

        ``cursor`` is the highest of ``triggers.cbor``, the snapshot and the batch records
        read (as the owner computes it at open); whether a trigger is registered in the
        owner right now is not visible from here.
        """
        self._check_open()
        saved, resets = self._owner_cursor_file()
        head = self._live.revision
        seen = self._live.owner_cursors
        result = {}
        for name in sorted(set(saved) | set(seen)):
            entry = saved.get(name)
            # After a replay_trigger made at revision R (the file's resets), only the
            # records after R count, as the owner computes it at open.
            noted = owner_cursor(seen, name, resets.get(name, -1))
            cursor = max(entry.cursor if entry else 0, noted)
            result[name] = {
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": len(entry.parked) if entry else 0,
            }
        return result

    def owner_parked(self, name: str) -> builtins.list[dict[str, Any]]:
        """The owner's parked events of trigger ``name`` (from its ``triggers.cbor``)."""
        self._check_open()
        entry = self._owner_cursor_file()[0].get(name)
        return list(entry.parked) if entry else []

    # ---- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop triggers (writing their cursors), stop following, close files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._triggers.close()
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._live.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"revision={self.revision}"
        return f"<evstate.Follower {self._path} {state}>"
