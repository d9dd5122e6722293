"""The delivery loop of one trigger: read from its cursor, run the handler, advance.

One thread per registered trigger runs :func:`run`. Per batch it claims the trigger from
its cursor store (which answers the cursor to deliver after, or that another process
delivers it now), reads the visible events after the cursor, and for each matching one runs
the condition and the handler; then it advances the cursor with the handler's writes (or,
after the last failed attempt, with a dead letter). Delivery semantics: docs/triggers.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from evstate.core.feed import RecordFeed
from evstate.core.triggers.cursors import CursorStore, Deleted, Fenced
from evstate.core.triggers.event import (
    ContextHost,
    Handler,
    ReadOnlyContext,
    TriggerContext,
    TriggerEvent,
    call_handler,
)
from evstate.core.writes import Write
from evstate.errors import (
    BackendUnavailableError,
    CorruptionError,
    HistoryCompactedError,
    StorageError,
    StoreClosedError,
    StoreFailedError,
)
from evstate.events import EventRecord
from evstate.values import printable_text

__all__ = [
    "ADVANCE_EVERY",
    "BATCH",
    "COALESCE",
    "Delivery",
    "Runner",
    "STORAGE_RETRY",
    "TriggerHost",
    "dead_letter",
    "deliver_one",
    "run",
]

log = logging.getLogger("evstate")

BATCH = 4096  # events read per claim
STORAGE_RETRY = 0.25  # seconds before retrying after a failed write (a full disk)
COALESCE = 0.001  # seconds a woken runner waits for more events (one wake-up per burst)
ADVANCE_EVERY = 1024  # events passed without writes between cursor moves


class TriggerHost(ContextHost, Protocol):
    """What the trigger machinery needs from a store."""

    _feed: RecordFeed

    def _visible_revision(self) -> int:
        """The newest revision triggers may see (acknowledged, and durable under always)."""

    def _records(self, low: int, high: int) -> Iterator[EventRecord]:
        """Records ``low..high`` in order (HistoryCompactedError if some are gone)."""

    def _oldest_revision(self) -> int:
        """The oldest retained revision."""


@dataclass(eq=False)
class Runner:
    """A trigger registered in this process: its handler, filters and thread."""

    name: str
    handler: Handler
    condition: Handler | None
    scope: str | None
    key: str | None
    registered: bool = True
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    released: bool = False  # the cursor store has let go of it (see Delivery.release)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_error: str | None = None
    delivered: int = 0
    max_in_flight: int = 1  # >1: handlers that return a Future are pipelined (pipeline.py)


@dataclass
class Delivery:
    """Settings shared by every runner of a store."""

    host: TriggerHost
    cursors: CursorStore
    progress: threading.Condition
    max_attempts: int = 5
    backoff: float = 0.05
    enabled: bool = True
    closed: bool = False
    idle: float = 0.5  # longest sleep between looks at the head (shorter: nobody notifies)
    coalesce: float = COALESCE

    def release(self, runner: Runner) -> None:
        """Let the cursor store go of ``runner``'s trigger, once, after its last advance."""
        with runner.lock:
            if runner.released:
                return
            runner.released = True
        self.cursors.unregister(runner.name)

    def context(self) -> TriggerContext:
        """A fresh ``event.store`` for one handler call."""
        if self.cursors.writable:
            return TriggerContext(self.host)
        return ReadOnlyContext(self.host)


def run(delivery: Delivery, runner: Runner) -> None:
    """The thread body of ``runner``: deliver until it is stopped or the store closes."""
    loops: dict[str, asyncio.AbstractEventLoop] = {}
    stop = runner.stop
    try:
        while not stop.is_set() and not delivery.closed:
            try:
                _step(delivery, runner, loops)
            except Fenced:
                continue  # claim again: the cursor may have moved elsewhere
            except Deleted as exc:
                runner.last_error = str(exc)
                runner.registered = False
                log.error("evstate: trigger %r stopped: %s", runner.name, exc)
                return
            except HistoryCompactedError as exc:
                runner.last_error = f"history_compacted: {exc}"
                log.error("evstate: trigger %r is behind the horizon: %s", runner.name, exc)
                stop.wait(1.0)
            except CorruptionError as exc:  # a damaged log: report, never skip
                runner.last_error = f"corruption: {exc}"
                log.error("evstate: trigger %r cannot read the log: %s", runner.name, exc)
                stop.wait(1.0)
            except StoreClosedError:
                return  # closing: what was not advanced is delivered again after reopening
            except StoreFailedError as exc:
                runner.last_error = f"store failed: {exc}"
                log.error("evstate: trigger %r stopped: %s", runner.name, exc)
                return
            except BackendUnavailableError as exc:
                runner.last_error = f"store unavailable: {exc}"
                stop.wait(0.5)
            except StorageError as exc:  # a failed write (a full disk): try it again
                runner.last_error = f"storage error: {exc}"
                log.error("evstate: trigger %r will retry: %s", runner.name, exc)
                stop.wait(STORAGE_RETRY)
    finally:
        loop = loops.get("loop")
        if loop is not None:
            loop.close()
        try:
            delivery.release(runner)
        except Exception as exc:  # the cursor store logs and retries what it can
            log.error("evstate: trigger %r: letting go of it failed: %s", runner.name, exc)


def _idle(delivery: Delivery, runner: Runner, cursor: int | None, timeout: float) -> None:
    """Sleep until something is visible after ``cursor`` (or ``timeout``).

    Woken by a write, the runner waits ``coalesce`` more before it reads: a writer that
    writes back to back then wakes it once per burst, not once per event, and is not
    slowed by a thread switch per write (the handler sees the events at most that much
    later).
    """
    host = delivery.host

    def ready() -> bool:
        if runner.stop.is_set() or delivery.closed:
            return True
        return delivery.enabled and cursor is not None and host._visible_revision() > cursor

    host._feed.wait(ready, timeout)
    if delivery.coalesce and cursor is not None and not runner.stop.is_set():
        runner.stop.wait(delivery.coalesce)


def _step(delivery: Delivery, runner: Runner, loops: dict[str, asyncio.AbstractEventLoop]) -> None:
    """One batch: claim, read what is visible after the cursor, deliver, advance.

    Events the handler does not write for (no match, or no ``event.store`` writes) move the
    cursor in one step every :data:`ADVANCE_EVERY` events and at the end of the batch:
    delivery is at-least-once for them anyway. An event with writes (or a dead letter)
    commits with its own cursor move, which covers the events passed before it.
    """
    cursors, host, stop = delivery.cursors, delivery.host, runner.stop
    if not delivery.enabled:
        cursors.pause(runner.name)
        _idle(delivery, runner, None, delivery.idle)
        return
    cursor = cursors.claim(runner.name)
    if cursor is None:  # another process delivers it now
        _idle(delivery, runner, None, min(delivery.idle, 0.25))
        return
    head = host._visible_revision()
    if cursor >= head:
        _idle(delivery, runner, cursor, delivery.idle)
        return
    if runner.max_in_flight > 1:
        _step_pipelined(
            delivery, runner, host._records(cursor + 1, min(head, cursor + BATCH)), loops
        )
        return
    passed = 0  # the newest revision done but not yet advanced to (0: none)
    scope, key = runner.scope, runner.key
    try:
        for record in host._records(cursor + 1, min(head, cursor + BATCH)):
            if stop.is_set() or not delivery.enabled:
                break
            if (scope is not None and record.scope != scope) or (
                key is not None and record.key != key
            ):
                passed = record.revision
            else:
                outcome = deliver_one(delivery, runner, record, loops)
                if outcome is None:
                    break  # stopping: this event stays undelivered, and comes again later
                writes, letter = outcome
                if writes or letter is not None:
                    # A handler that finished is recorded even if it was stopped meanwhile:
                    # the cursor store is let go of only after this thread's last advance.
                    cursors.advance(runner.name, record.revision, writes, letter)
                    passed = 0
                else:
                    passed = record.revision
            if passed and passed % ADVANCE_EVERY == 0:
                cursors.advance(runner.name, passed, [], None)
                passed = 0
                with delivery.progress:
                    delivery.progress.notify_all()
    finally:
        _end_batch(delivery, runner, passed)


def _end_batch(delivery: Delivery, runner: Runner, passed: int) -> None:
    """After a batch: move the cursor over the events passed, flush it, tell the waiters."""
    if passed:
        delivery.cursors.advance(runner.name, passed, [], None)
    delivery.cursors.flush(runner.name)
    with delivery.progress:
        delivery.progress.notify_all()


def _step_pipelined(
    delivery: Delivery,
    runner: Runner,
    records: Iterator[EventRecord],
    loops: dict[str, asyncio.AbstractEventLoop],
) -> None:
    """Deliver with up to ``max_in_flight`` handler calls outstanding (a remote worker).

    A handler that returns a :class:`concurrent.futures.Future` is not waited for before the
    next event's call starts, so calls overlap; they start in revision order. The cursor
    passes an event only once it and every event before it completed (at-least-once holds).
    A call that failed is retried from here, one at a time, with the usual backoff, before
    the cursor moves past it: events after it may then have run before its retry.
    """
    cursors, stop = delivery.cursors, runner.stop
    scope, key = runner.scope, runner.key
    window: deque[tuple[EventRecord, TriggerEvent | None, Any]] = deque()
    passed = 0

    def settle() -> bool:
        """Finish the oldest call; False when stopping (the cursor stays before it)."""
        nonlocal passed
        record, event, result = window.popleft()
        writes: list[Write] = []
        letter: dict[str, Any] | None = None
        if isinstance(result, concurrent.futures.Future):
            while not result.done():
                concurrent.futures.wait([result], timeout=0.05)
                if stop.is_set() or delivery.closed:
                    return False
            if result.exception() is not None:
                outcome = deliver_one(delivery, runner, record, loops)  # retried from here
                if outcome is None:
                    return False
                writes, letter = outcome
            else:
                runner.delivered += 1
                writes = event.writes if event is not None else []
        elif event is not None:
            runner.delivered += 1
            writes = event.writes
        if writes or letter is not None:
            cursors.advance(runner.name, record.revision, writes, letter)
            passed = 0
        else:
            passed = record.revision
        return True

    try:
        for record in records:
            if stop.is_set() or not delivery.enabled:
                break
            if (scope is not None and record.scope != scope) or (
                key is not None and record.key != key
            ):
                window.append((record, None, None))
            else:
                event = TriggerEvent(record, runner.name, delivery.context)
                try:
                    if runner.condition is not None and not call_handler(
                        runner.condition, event, loops
                    ):
                        window.append((record, None, None))
                        continue
                    result = call_handler(runner.handler, event, loops)
                except StorageError:
                    raise
                except Exception as exc:  # retried when its turn to settle comes
                    failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
                    failed.set_exception(exc)
                    result = failed
                window.append((record, event, result))
            while window and (len(window) >= runner.max_in_flight or _finished(window[0][2])):
                if not settle():
                    return
                if passed and passed % ADVANCE_EVERY == 0:
                    cursors.advance(runner.name, passed, [], None)
                    passed = 0
        while window:
            if not settle():
                return
    finally:
        _end_batch(delivery, runner, passed)


def _finished(result: Any) -> bool:
    return not isinstance(result, concurrent.futures.Future) or result.done()


def deliver_one(
    delivery: Delivery,
    runner: Runner,
    record: EventRecord,
    loops: dict[str, asyncio.AbstractEventLoop],
) -> tuple[list[Write], dict[str, Any] | None] | None:
    """Run condition and handler, retrying; ``(writes, dead letter)``, or None if stopped."""
    attempt = 0
    stop = runner.stop
    while True:
        event = TriggerEvent(record, runner.name, delivery.context)
        try:
            if runner.condition is None or call_handler(runner.condition, event, loops):
                result = call_handler(runner.handler, event, loops)
                if isinstance(result, concurrent.futures.Future):
                    result.result()  # a handler that answers later (a remote worker)
                runner.delivered += 1
            return event.writes, None
        except StorageError:
            raise
        except Exception as exc:
            if stop.is_set():
                return None  # unregistered mid-call (e.g. the worker went away)
            attempt += 1
            runner.last_error = printable_text(f"{type(exc).__name__}: {exc}")
            if attempt >= delivery.max_attempts:
                log.error(
                    "evstate: trigger %r parked revision %d after %d attempts: %s",
                    runner.name,
                    record.revision,
                    attempt,
                    runner.last_error,
                )
                return [], dead_letter(event, runner.last_error, attempt)
            log.warning(
                "evstate: trigger %r failed on revision %d (attempt %d): %s",
                runner.name,
                record.revision,
                attempt,
                runner.last_error,
            )
            if stop.wait(delivery.backoff * 2 ** (attempt - 1)):
                return None


def dead_letter(event: TriggerEvent, error: str, attempts: int) -> dict[str, Any]:
    """A parked event: ``revision``, ``event``, ``error``, ``attempts``, ``parked_at``."""
    return {
        "revision": event.revision,
        "event": event.to_dict(),
        "error": error,
        "attempts": attempts,
        "parked_at": time.time_ns() // 1_000_000,
    }
