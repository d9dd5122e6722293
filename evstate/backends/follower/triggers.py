"""Triggers that run in a follower's process: projections with cursor files of their own.

A follower trigger reads the owner's events in revision order from its own durable cursor,
like a store trigger (docs/triggers.md), with these differences:

- **Cursor files.** Each trigger keeps its cursor and dead letters in a file of its own
  (:mod:`evstate.backends.follower.cursors`; ``<store>/followers`` by default), written at most every
  100 ms while it advances and when it is unregistered. Before a cursor is written, the
  segment being read is fdatasynced through a read-only descriptor, so a cursor never covers
  a record an OS crash could still take back. These are the only files a follower writes.
- **One process per name.** ``<name>.lock`` is ``flock``-ed while the trigger is registered;
  a second process registering the same name gets :class:`StoreLockedError`.
- **Read-only context.** ``event.store`` reads the follower's live view; ``set``, ``update``
  and ``delete`` raise :class:`InvalidRequestError` (the owner's store is not the follower's
  to write: a follower's handler writes to its own targets, keyed by ``event.revision``).
- **No pin on the owner's history.** If the owner's retention compacts events a follower
  trigger has not read yet, its status shows ``history_compacted`` and it waits for
  ``replay_trigger(name, revision)`` from a retained revision.

Delivery is as for store triggers: per trigger in revision order, one event at a time,
at-least-once (``event.revision`` is the idempotency key); a failing handler is retried with
backoff (50 ms, 100 ms, ...) up to 5 attempts, then the event is parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from evstate.errors import (
    HistoryCompactedError,
    InvalidRequestError,
    TriggerTimeoutError,
)
from evstate.events import EventRecord
from evstate.backends.follower.cursors import (
    CURSOR_SUFFIX,
    LOCK_SUFFIX,
    cursor_file,
    drop_follower_parked,
    list_follower_triggers,
    lock_trigger,
    read_cursor,
    set_follower_cursor,
    write_cursor,
)
from evstate.core.triggers import TriggerContext, TriggerEvent, call_handler, check_trigger_args

__all__ = ["FollowerContext", "FollowerHost", "FollowerTrigger", "FollowerTriggers"]

log = logging.getLogger("evstate")

Handler = Callable[[Any], Any]
CHECKPOINT_INTERVAL = 0.1


class FollowerHost(Protocol):
    """What follower triggers need from the follower."""

    @property
    def revision(self) -> int: ...  # noqa: D102
    def get(self, scope: str, key: str) -> Any: ...  # noqa: D102
    def list(self, scope: str) -> dict[str, Any]: ...  # noqa: D102
    def _records(self, low: int, high: int) -> Iterator[EventRecord]: ...
    def _oldest_revision(self) -> int: ...
    def _wait_past(self, revision: int, timeout: float, stop: threading.Event) -> None: ...
    def _sync_log(self) -> None: ...
    def _wake_waiters(self) -> None: ...


class FollowerContext(TriggerContext):
    """``event.store`` in a follower trigger: reads the follower's view; writes refuse."""

    def __init__(self, host: FollowerHost) -> None:
        # Deliberately not TriggerContext.__init__: nothing is ever committed from here.
        self._follower = host
        self.writes: list[tuple[Any, ...]] = []

    def get(self, scope: str, key: str) -> Any:
        """The follower's current value of ``scope/key`` (``None`` if missing)."""
        return self._follower.get(scope, key)

    def list(self, scope: str) -> dict[str, Any]:
        """The follower's current ``{key: value}`` of ``scope``."""
        return self._follower.list(scope)

    def _refuse(self, what: str) -> NoReturn:
        raise InvalidRequestError(
            f"a follower is read-only: {what} through event.store is not possible here; "
            "write to the owner (its API or server), or to the projection's own target"
        )

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("set")

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("update")

    def delete(self, scope: str, key: str) -> Any:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("delete")


# ---- runners --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Runner:
    name: str
    cursor: int
    parked: list[dict[str, Any]]
    lock_fd: int
    handler: Handler
    condition: Handler | None
    scope: str | None
    key: str | None
    last_error: str | None = None
    delivered: int = 0
    dirty: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class FollowerTrigger:
    """A registered follower trigger (what :meth:`Follower.trigger` returns)."""

    def __init__(self, manager: FollowerTriggers, name: str) -> None:
        self._manager = manager
        self.name = name

    def unregister(self) -> None:
        """Stop delivery and write the cursor; registering the name again resumes."""
        self._manager.unregister(self.name)

    def __repr__(self) -> str:
        return f"<evstate.FollowerTrigger {self.name!r}>"


class FollowerTriggers:
    """The registered triggers of one follower, their runners and cursor files."""

    def __init__(
        self, host: FollowerHost, cursor_dir: str, *, max_attempts: int = 5, backoff: float = 0.05
    ) -> None:
        self.cursor_dir = cursor_dir
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._host = host
        self._runners: dict[str, _Runner] = {}
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self._save_lock = threading.Lock()  # one cursor-file write at a time
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # ---- registration -------------------------------------------------------------------

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        scope: str | None,
        key: str | None,
        condition: Handler | None,
        start: str | int,
    ) -> FollowerTrigger:
        """Register ``name`` (see ``Follower.trigger`` for the contract)."""
        check_trigger_args(name, handler, scope=scope, key=key, condition=condition)
        with self._lock:
            if self._closing.is_set():
                raise InvalidRequestError("the follower is closed")
            if name in self._runners:
                raise InvalidRequestError(f"trigger {name!r} is already registered")
            fd = lock_trigger(self.cursor_dir, name)
            try:
                cursor, parked = self._initial_cursor(name, start)
            except BaseException:
                os.close(fd)
                raise
            runner = _Runner(name, cursor, parked, fd, handler, condition, scope, key, dirty=True)
            self._runners[name] = runner
            runner.thread = threading.Thread(
                target=self._run, args=(runner,), name=f"evstate-follower-{name}", daemon=True
            )
            runner.thread.start()
            if self._checkpointer is None:
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_loop, name="evstate-follower-cursors", daemon=True
                )
                self._checkpointer.start()
        return FollowerTrigger(self, name)

    def _initial_cursor(self, name: str, start: str | int) -> tuple[int, list[dict[str, Any]]]:
        oldest = self._host._oldest_revision()
        head = self._host.revision
        saved = read_cursor(self.cursor_dir, name)
        if saved is not None:
            cursor = int(saved["cursor"])
            if cursor < oldest - 1:
                raise HistoryCompactedError(
                    f"follower trigger {name!r} stopped at revision {cursor}, but the owner "
                    f"compacted history before revision {oldest}: replay_trigger() from a "
                    "retained revision, or delete_trigger() and register it again",
                    horizon=oldest,
                )
            if cursor > head:
                log.warning(
                    "evstate follower: trigger %r cursor %d is past the log's head %d "
                    "(writes lost in an OS crash, or another store); continuing from the head",
                    name,
                    cursor,
                    head,
                )
                cursor = head
            return cursor, list(saved.get("parked", []))
        if start == "latest":
            return head, []
        if start == "earliest":
            return oldest - 1, []
        if type(start) is int and start >= 1:
            if start < oldest:
                raise HistoryCompactedError(
                    f"revision {start} is before the retained history (revision {oldest})",
                    horizon=oldest,
                )
            return start - 1, []
        raise InvalidRequestError(
            f"start must be 'latest', 'earliest' or a revision >= 1, got {start!r}"
        )

    def unregister(self, name: str) -> None:
        """Stop ``name``'s runner, write its cursor, release its lock. No-op if unknown."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is None:
                return
            runner.stop.set()
        self._host._wake_waiters()
        if runner.thread is not None and runner.thread is not threading.current_thread():
            runner.thread.join()
        with self._lock:
            self._runners.pop(name, None)
        try:
            self._save(runner)
        finally:
            os.close(runner.lock_fd)
            with self._lock:
                self._progress.notify_all()

    def delete(self, name: str) -> None:
        """Unregister ``name`` and remove its cursor and lock files."""
        self.unregister(name)
        fd = lock_trigger(self.cursor_dir, name)
        try:
            for suffix in (CURSOR_SUFFIX, LOCK_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cursor_file(self.cursor_dir, name, suffix))
        finally:
            os.close(fd)

    def replay(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so delivery continues at ``from_revision``."""
        if type(from_revision) is not int or from_revision < 1:
            raise InvalidRequestError("from_revision must be an int >= 1")
        oldest = self._host._oldest_revision()
        if from_revision < oldest:
            raise HistoryCompactedError(
                f"revision {from_revision} is before the retained history (revision {oldest})",
                horizon=oldest,
            )
        cursor = min(from_revision - 1, self._host.revision)
        with self._lock:
            runner = self._runners.get(name)
        if runner is None:
            set_follower_cursor(self.cursor_dir, name, cursor)
            return
        self.unregister(name)
        set_follower_cursor(self.cursor_dir, name, cursor)
        self.register(
            name,
            runner.handler,
            scope=runner.scope,
            key=runner.key,
            condition=runner.condition,
            start="latest",
        )

    # ---- cursors ------------------------------------------------------------------------

    def _save(self, runner: _Runner) -> None:
        """Write ``runner``'s cursor file if it changed (disk I/O outside ``_lock``)."""
        with self._save_lock:
            with self._lock:
                if not runner.dirty:
                    return
                runner.dirty = False
                cursor, parked = runner.cursor, [dict(p) for p in runner.parked]
            try:
                self._host._sync_log()
                write_cursor(self.cursor_dir, runner.name, cursor, parked)
            except OSError as exc:
                with self._lock:
                    runner.dirty = True
                log.error("evstate follower: could not write cursor of %r: %s", runner.name, exc)

    def _checkpoint_loop(self) -> None:
        while not self._closing.wait(CHECKPOINT_INTERVAL):
            with self._lock:
                dirty = [r for r in self._runners.values() if r.dirty]
            for runner in dirty:
                self._save(runner)

    # ---- delivery -----------------------------------------------------------------------

    def _run(self, runner: _Runner) -> None:
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        stop = runner.stop
        try:
            while not stop.is_set():
                head = self._host.revision
                if runner.cursor >= head:
                    self._host._wait_past(runner.cursor, 0.5, stop)
                    continue
                try:
                    for record in self._host._records(runner.cursor + 1, head):
                        if stop.is_set() or not self._deliver(runner, record, loops):
                            break
                        with self._lock:
                            runner.cursor = record.revision
                            runner.dirty = True
                            self._progress.notify_all()
                except HistoryCompactedError as exc:
                    runner.last_error = f"history_compacted: {exc}"
                    log.error("evstate follower: trigger %r is behind: %s", runner.name, exc)
                    stop.wait(1.0)
                except Exception as exc:  # e.g. corruption in the owner's log: keep trying
                    runner.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("evstate follower: trigger %r cannot read: %s", runner.name, exc)
                    stop.wait(1.0)
        finally:
            if "loop" in loops:
                loops["loop"].close()

    def _deliver(
        self, runner: _Runner, record: EventRecord, loops: dict[str, asyncio.AbstractEventLoop]
    ) -> bool:
        """Run one event through condition and handler; False if stopped before finishing."""
        if (runner.scope is not None and record.scope != runner.scope) or (
            runner.key is not None and record.key != runner.key
        ):
            return True
        attempt = 0
        while True:
            event = TriggerEvent(record, runner.name, FollowerContext(self._host))
            try:
                if runner.condition is None or call_handler(runner.condition, event, loops):
                    call_handler(runner.handler, event, loops)
                    runner.delivered += 1
                return True
            except Exception as exc:
                if runner.stop.is_set():
                    return False
                attempt += 1
                runner.last_error = f"{type(exc).__name__}: {exc}"
                if attempt >= self.max_attempts:
                    log.error(
                        "evstate follower: trigger %r parked revision %d after %d attempts: %s",
                        runner.name,
                        record.revision,
                        attempt,
                        runner.last_error,
                    )
                    with self._lock:
                        runner.parked.append(
                            {
                                "revision": record.revision,
                                "event": event.to_dict(),
                                "error": runner.last_error,
                                "attempts": attempt,
                                "parked_at": time.time_ns() // 1_000_000,
                            }
                        )
                    return True
                if runner.stop.wait(self.backoff * 2 ** (attempt - 1)):
                    return False

    # ---- status, waiting, dead letters ------------------------------------------------------

    def status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per trigger (registered here, or with a cursor file): cursor, lag, parked, errors."""
        result: dict[str, dict[str, Any]] = {}
        for name, saved in list_follower_triggers(self.cursor_dir).items():
            result[name] = {
                "registered": False,
                "cursor": saved["cursor"],
                "lag": max(head - saved["cursor"], 0),
                "parked": len(saved["parked"]),
                "last_error": None,
                "delivered": 0,
                "scope": None,
                "key": None,
            }
        with self._lock:
            for runner in self._runners.values():
                result[runner.name] = {
                    "registered": True,
                    "cursor": runner.cursor,
                    "lag": max(head - runner.cursor, 0),
                    "parked": len(runner.parked),
                    "last_error": runner.last_error,
                    "delivered": runner.delivered,
                    "scope": runner.scope,
                    "key": runner.key,
                }
        return result

    def wait(self, revision: int, timeout: float | None) -> None:
        """Block until every registered trigger has processed ``revision``.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                behind = [r.name for r in self._runners.values() if r.cursor < revision]
                if not behind:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TriggerTimeoutError(
                        f"follower triggers {', '.join(sorted(behind))} did not reach revision "
                        f"{revision} within {timeout} s"
                    )
                self._progress.wait(0.1 if remaining is None else min(remaining, 0.1))

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The parked events of ``name``."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is not None:
                return [dict(p) for p in runner.parked]
        saved = read_cursor(self.cursor_dir, name)
        if saved is None:
            raise InvalidRequestError(f"no follower trigger named {name!r}")
        return list(saved.get("parked", []))

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget parked events of ``name`` (all, or one revision); returns how many."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is not None:
                before = len(runner.parked)
                runner.parked = [
                    p for p in runner.parked if revision is not None and p["revision"] != revision
                ]
                runner.dirty = True
                return before - len(runner.parked)
        return drop_follower_parked(self.cursor_dir, name, revision)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run the (registered) handler again on parked events now; returns successes."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is None:
                raise InvalidRequestError(f"follower trigger {name!r} is not registered here")
            todo = [p for p in runner.parked if revision is None or p["revision"] == revision]
        done = 0
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            for item in todo:
                records = list(self._host._records(item["revision"], item["revision"]))
                if not records:
                    continue
                event = TriggerEvent(records[0], name, FollowerContext(self._host))
                try:
                    call_handler(runner.handler, event, loops)
                except Exception as exc:
                    item["error"] = f"{type(exc).__name__}: {exc}"
                    item["attempts"] += 1
                    continue
                with self._lock:
                    runner.parked = [p for p in runner.parked if p is not item]
                    runner.dirty = True
                done += 1
        finally:
            if "loop" in loops:
                loops["loop"].close()
        return done

    def close(self) -> None:
        """Stop every runner and write every cursor."""
        for name in list(self._runners):
            self.unregister(name)
        self._closing.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join()
