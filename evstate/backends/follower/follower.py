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

from evstate.errors import StorageError, StoreClosedError
from evstate.events import Event, EventRecord
from evstate.backends.follower.audit import AuditMethods, check_name
from evstate.backends.follower.files import Progress
from evstate.backends.follower.live import LiveLog
from evstate.backends.follower.triggers import FollowerTrigger, FollowerTriggers, Handler
from evstate.core.triggers import register_or_decorate
from evstate.values import decode_value

if TYPE_CHECKING:  # watchdog itself is imported when a follower starts watching
    from watchdog.observers.api import BaseObserver

__all__ = ["POLL_INTERVAL", "Follower", "follow"]

log = logging.getLogger("evstate")

POLL_INTERVAL = 0.05  # seconds between polls: the safety net under the directory watch
FOLLOWERS_DIR = "followers"


def follow(
    path: str | os.PathLike[str],
    *,
    live: bool = True,
    watch: bool = True,
    cursor_dir: str | os.PathLike[str] | None = None,
    poll_interval: float = POLL_INTERVAL,
    progress: Progress | None = None,
) -> Follower:
    """Open the store directory ``path`` read-only, as a follower of its owner.

    ``live=False`` loads once and follows only when :meth:`Follower.refresh` is called (no
    background threads: what one-shot commands want). ``watch=False`` keeps up by polling
    every ``poll_interval`` seconds alone (for file systems whose changes the OS does not
    report, such as network mounts written by another host). ``cursor_dir`` is where follower
    triggers keep their cursor files (default ``<path>/followers``). ``progress(done,
    total)`` is called while the initial load reads the log (bytes).

    Raises:
        StorageError: ``path`` is not an existing directory (nothing is created).
        CorruptionError: the owner's files are damaged beyond a torn tail.
    """
    return Follower(
        path,
        live=live,
        watch=watch,
        cursor_dir=cursor_dir,
        poll_interval=poll_interval,
        progress=progress,
    )


class Follower(AuditMethods):
    """A read-only, live view of a store directory owned by another process.

    Reads (``get``, ``list``, ``list_values``, ``list_groups``) answer from memory, like the
    store's, and see the owner's writes once the follower has read them (:attr:`revision`).
    ``history``, ``events``, ``at``, ``restore_to``, ``stats`` and ``verify`` read the owner's
    retained files. Thread-safe. Use :func:`follow` to open one; close it (or use ``with``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        live: bool = True,
        watch: bool = True,
        cursor_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = POLL_INTERVAL,
        progress: Progress | None = None,
    ) -> None:
        """Load the directory and start following it (see :func:`follow`)."""
        directory = os.path.abspath(os.fspath(path))
        if not os.path.isdir(directory):
            raise StorageError(f"no store directory at {directory}")
        self._path = directory
        self._live = LiveLog(directory, progress)
        self._triggers = FollowerTriggers(
            self,
            os.path.abspath(os.fspath(cursor_dir or os.path.join(directory, FOLLOWERS_DIR))),
        )
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
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._live.closed

    @property
    def problem(self) -> str | None:
        """Damage in the owner's files that stops the follower at :attr:`revision`, if any."""
        return self._live.problem

    def _check_open(self) -> None:
        if self._live.closed:
            raise StoreClosedError("the follower is closed")

    # ---- keeping up ---------------------------------------------------------------------

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
                self._live.wait_past(self._live.revision, step, None)
        return self._live.revision >= revision

    # ---- state reads (as the store's) ------------------------------------------------------

    def get(self, scope: str, key: str) -> Any:
        """The owner's value of ``scope/key`` as last read (a fresh copy), or ``None``."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        raw = self._live.table.get(scope, key)
        return None if raw is None else decode_value(raw)

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope``, in sorted key order (``{}`` if none)."""
        self._check_open()
        check_name("scope", scope)
        items = self._live.table.items(scope)
        return {key: decode_value(items[key]) for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in key insertion order (iii ``state::list``)."""
        self._check_open()
        check_name("scope", scope)
        return [decode_value(raw) for raw in self._live.table.items(scope).values()]

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}``: sorted scopes holding at least one key."""
        self._check_open()
        return {"groups": self._live.table.scopes()}

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
                    self._live.wait_past(position, 0.25, None)
                continue
            for record in self._live.records(position + 1, head):
                position = record.revision
                if (scope is None or record.scope == scope) and (key is None or record.key == key):
                    idle_since = time.monotonic()
                    yield record.to_event()

    # ---- follower triggers (docs: evstate/follower_triggers.py) -----------------------------

    def trigger(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        condition: Handler | None = None,
        start: str | int = "latest",
    ) -> Any:
        """Run a projection of the owner's events in this process; usable as a decorator.

        As ``Store.trigger`` (``name`` is durable: its cursor file survives restarts;
        ``start`` applies to a new name only: ``"latest"``, ``"earliest"`` or a revision),
        except that ``event.store`` is read-only here and the trigger does not pin the owner's
        history. Returns a :class:`FollowerTrigger`, or the function when used as a decorator.

        Raises:
            InvalidRequestError: bad arguments, or the name is already registered here.
            StoreLockedError: another process runs a follower trigger of that name.
            HistoryCompactedError: its cursor (or ``start``) is before the retained history.
        """
        self._check_open()

        def register(fn: Handler) -> FollowerTrigger:
            return self._triggers.register(
                name, fn, scope=scope, key=key, condition=condition, start=start
            )

        return register_or_decorate(register, handler)

    def unregister_trigger(self, name: str) -> None:
        """Stop delivering to ``name``; its cursor file is written and kept."""
        self._triggers.unregister(name)

    def delete_trigger(self, name: str) -> None:
        """Unregister ``name`` and remove its cursor file."""
        self._triggers.delete(name)

    def replay_trigger(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so that delivery continues at ``from_revision``."""
        self._triggers.replay(name, from_revision)

    def wait_for_triggers(self, revision: int | None = None, timeout: float | None = None) -> None:
        """Return once every registered follower trigger has processed ``revision``.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        self._triggers.wait(self._live.revision if revision is None else revision, timeout)

    def trigger_status(self) -> dict[str, dict[str, Any]]:
        """Per follower trigger (registered here or with a cursor file): cursor, lag, parked."""
        return self._triggers.status(self._live.revision)

    def parked_events(self, name: str) -> builtins.list[dict[str, Any]]:
        """The dead letters of follower trigger ``name``."""
        return self._triggers.parked(name)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run ``name``'s handler again on its parked events (all, or one); returns successes."""
        return self._triggers.replay_parked(name, revision)

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget ``name``'s parked events (all, or one); returns how many."""
        return self._triggers.drop_parked(name, revision)

    # ---- host interface for the trigger runners -------------------------------------------

    def _records(self, low: int, high: int) -> Iterator[EventRecord]:
        return self._live.records(low, high)

    def _oldest_revision(self) -> int:
        return self._live.history.oldest_revision()

    def _wait_past(self, revision: int, timeout: float, stop: threading.Event) -> None:
        if self._thread is None:  # not live: poll on behalf of the runner
            self._live.poll()
        self._live.wait_past(revision, timeout if self._thread else min(timeout, 0.05), stop)

    def _wake_waiters(self) -> None:
        self._live.wake_waiters()

    def _sync_log(self) -> None:
        self._live.sync()

    # ---- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop triggers (writing their cursors), stop following, close files. Idempotent."""
        if self._live.closed:
            return
        self._triggers.close()
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._live.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"revision={self.revision}"
        return f"<evstate.Follower {self._path} {state}>"
