"""The expirer: keys whose time-to-live ran out become ``deleted`` events in the log.

A key counts as expired from its deadline on: every read hides it at once
(:mod:`evstate.core.reads`), and a write to it first commits its expiry. The expirer then
writes what the log still lacks: for each due key a ``deleted`` event with the old value
and ``reason: "expired"``, in revision order like any write, in log records of at most
:data:`EXPIRY_CHUNK` events, taking the write lock once per record so that mass expiry never
stalls writers for long. It finds due keys in the ordered :class:`~evstate.core.expiry.
ExpiryIndex`, never by scanning all keys.

A background thread runs it (started when the first key with a deadline appears, and at
open when the recovered state has some: keys that expired while the store was closed get
their events then). A store opened with an injected clock runs no thread: call
:meth:`ExpiryMethods.expire`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from evstate.core.lifecycle import Clock
from evstate.core.table import StateTable
from evstate.core.writes import expiry_records
from evstate.events import EventRecord
from evstate.values import expired

__all__ = ["EXPIRY_CHUNK", "ExpirerThread", "ExpiryMethods", "expiry_records"]

log = logging.getLogger("evstate")

EXPIRY_CHUNK = 512  # expiry events per log record (and per hold of the write lock)
_IDLE_WAIT = 1.0  # seconds the thread sleeps at most between looks at the index


class ExpirerThread:
    """The background thread that runs expiry rounds (one per store; redis stores too).

    Started on the first :meth:`wake` (a store without deadlines runs no thread). Between
    rounds it sleeps until the next deadline, at most :data:`_IDLE_WAIT`; :meth:`wake` with
    a deadline sooner than that wakes it early. ``run_round()`` expires what is due and
    returns the milliseconds until the next deadline it knows of (None: none); a failed
    round is logged and tried again. With ``background=False`` (an injected clock) it never
    starts: the caller runs expiry itself.
    """

    def __init__(
        self,
        name: str,
        run_round: Callable[[], int | None],
        stopped: threading.Event,
        clock: Clock,
        *,
        background: bool = True,
    ) -> None:
        self._name = name
        self._run_round = run_round
        self._stopped = stopped
        self._clock = clock
        self._background = background
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._next_look = 0  # ms: when the sleeping thread looks again (0: awake)

    def wake(self, deadline_ms: int | None = None) -> None:
        """A deadline was set: make sure the thread runs and looks by then.

        Waking a sleeping thread costs the writer a context switch: it is only done when
        ``deadline_ms`` comes before the thread's next look anyway.
        """
        if not self._background:
            return
        if self._thread is not None:
            if deadline_ms is not None and deadline_ms >= self._next_look:
                return
        else:
            with self._start_lock:
                if self._thread is None and not self._stopped.is_set():
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Wait for the thread to end (the store set ``stopped`` first)."""
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            until: int | None = None
            try:
                until = self._run_round()
            except Exception:  # a failed write or an outage: the next round tries again
                log.exception("evstate: expiring keys failed")
            wait = _IDLE_WAIT if until is None else min(max(until / 1000.0, 0.0), _IDLE_WAIT)
            self._next_look = self._clock() + int(wait * 1000)
            self._wake.wait(wait)
            self._wake.clear()
            self._next_look = 0


class ExpiryMethods:
    """:meth:`expire` and the background expirer of a store that writes (a mixin)."""

    _table: StateTable
    _clock: Clock
    _write_lock: threading.Lock
    _stop: threading.Event
    _closed: bool

    def _check_open(self) -> None:
        raise NotImplementedError

    def _check_writable(self) -> None:
        raise NotImplementedError

    def _next_stamp(self) -> tuple[int, int]:
        raise NotImplementedError

    def _append_records(self, records: Any, cursor: Any = None) -> None:
        raise NotImplementedError

    def _acknowledge(self, revision: int) -> None:
        raise NotImplementedError

    def _start_expirer(self, *, background: bool) -> None:
        self._expirer = ExpirerThread(
            "evstate-expirer", self._expire_round, self._stop, self._clock, background=background
        )
        if self._table.expiry.entries:
            self.expire()  # deadlines that passed while the store was closed
            self._wake_expirer()

    def _wake_expirer(self, deadline_ms: int | None = None) -> None:
        self._expirer.wake(deadline_ms)

    def _stop_expirer(self) -> None:
        self._expirer.stop()

    def _expire_round(self) -> int | None:
        self.expire()
        due = self._table.expiry.next_due_ms()
        return None if due is None else due - self._clock()

    def expire(self) -> int:
        """Write the expiry events of every key whose deadline has passed; returns how many.

        The background expirer does this by itself; call it to make the log current now
        (or, with an injected clock, to move expiry along). Reads never need it: they hide
        a due key at once.

        Raises:
            StoreClosedError, StorageError, StoreFailedError.
        """
        self._check_open()
        total = 0
        while True:
            now = self._clock()
            table = self._table
            candidates = table.expiry.take_due(now, EXPIRY_CHUNK, _due_check(table, now))
            if not candidates:
                return total
            records: list[EventRecord] = []
            with self._write_lock:
                if self._closed:
                    return total
                self._check_writable()
                due: dict[tuple[str, str], bytes] = {}
                for scope, key in candidates:
                    raw = table.get(scope, key)
                    if raw is not None and expired(raw, now):
                        due[(scope, key)] = raw
                if due:
                    first, timestamp = self._next_stamp()
                    records = expiry_records(
                        [(scope, key, raw) for (scope, key), raw in due.items()],
                        first,
                        timestamp,
                    )
                    self._append_records(records)
            if records:
                self._acknowledge(records[-1].revision)
                total += len(records)


def _due_check(table: StateTable, now: int) -> Callable[[str, str], bool]:
    def due(scope: str, key: str) -> bool:
        raw = table.get(scope, key)
        return raw is not None and expired(raw, now)

    return due
