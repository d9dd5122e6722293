"""The triggers of one store: registration, status, waiting and dead letters.

Written once for every store kind, over the store's :class:`CursorStore` (where cursors and
dead letters live) and a :class:`~evstate.core.triggers.runner.TriggerHost` (where events
come from). The runners themselves: :mod:`evstate.core.triggers.runner`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from evstate.core.triggers.cursors import CursorStore, KnownTrigger
from evstate.core.triggers.event import Handler, TriggerEvent, call_handler
from evstate.core.triggers.runner import Delivery, Runner, TriggerHost, run
from evstate.errors import (
    HistoryCompactedError,
    InvalidRequestError,
    StoreClosedError,
    TriggerTimeoutError,
)
from evstate.values import printable_text

__all__ = ["MAX_IN_FLIGHT", "Trigger", "TriggerManager", "check_trigger_args"]

MAX_IN_FLIGHT = 1024  # pipelined handler calls of one trigger


def check_trigger_args(
    name: object, handler: object, *, scope: object, key: object, condition: object
) -> None:
    """Validate ``trigger()``'s arguments.

    Raises:
        InvalidRequestError: an empty or non-str name (or one that is not valid Unicode),
            a non-callable handler or condition, or a scope/key that is neither str nor None.
    """
    if type(name) is not str or not name:
        raise InvalidRequestError("a trigger name must be a non-empty str")
    if printable_text(name) != name:
        raise InvalidRequestError("a trigger name must be valid Unicode (no lone surrogates)")
    if not callable(handler) or (condition is not None and not callable(condition)):
        raise InvalidRequestError("handler and condition must be callable")
    for what, value in (("scope", scope), ("key", key)):
        if value is not None and type(value) is not str:
            raise InvalidRequestError(f"{what} must be a str or None")


class Trigger:
    """A registered trigger (what ``trigger()`` returns)."""

    def __init__(self, manager: TriggerManager, name: str) -> None:
        self._manager = manager
        self.name = name

    def unregister(self) -> None:
        """Stop delivery; the cursor is kept, so registering the name again resumes."""
        self._manager.unregister(self.name)

    def __repr__(self) -> str:
        return f"<evstate.Trigger {self.name!r}>"


class TriggerManager:
    """Registry, runners, status, waiting and dead letters of a store's triggers."""

    def __init__(self, host: TriggerHost, cursors: CursorStore, *, enabled: bool) -> None:
        self._host = host
        self.cursors = cursors
        self._runners: dict[str, Runner] = {}
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self.delivery = Delivery(host, cursors, self._progress, enabled=enabled)

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
        max_in_flight: int = 1,
    ) -> Trigger:
        """Register (or re-register) ``name``; see ``Store.trigger`` for the contract."""
        check_trigger_args(name, handler, scope=scope, key=key, condition=condition)
        if type(max_in_flight) is not int or not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise InvalidRequestError(
                f"max_in_flight must be an int from 1 to {MAX_IN_FLIGHT}, got {max_in_flight!r}"
            )
        with self._lock:
            if self.delivery.closed:
                raise StoreClosedError("the store is closed")
            previous = self._runners.get(name)
            if previous is not None and previous.registered:
                raise InvalidRequestError(f"trigger {name!r} is already registered")
            runner = Runner(name, handler, condition, scope, key, max_in_flight=max_in_flight)
            self._runners[name] = runner  # claims the name before the cursor store is asked
        try:
            thread = previous.thread if previous is not None else None
            if thread is not None and thread is not threading.current_thread():
                thread.join()  # never two runners of one name: exactly-once
            self.cursors.register(
                name, start, self._host._oldest_revision(), self._host._visible_revision()
            )
        except BaseException:
            with self._lock:
                if self._runners.get(name) is runner:
                    if previous is not None:
                        self._runners[name] = previous
                    else:
                        del self._runners[name]
            raise
        runner.thread = threading.Thread(
            target=run, args=(self.delivery, runner), name=f"evstate-trigger-{name}", daemon=True
        )
        runner.thread.start()
        return Trigger(self, name)

    def unregister(self, name: str, *, wait: bool = True) -> None:
        """Stop ``name``'s runner; keep its cursor and dead letters.

        With ``wait=False`` it returns at once (safe to call from an event loop a handler
        call may be waiting on); the runner stops on its own and never advances the cursor
        past an event it did not finish.
        """
        with self._lock:
            runner = self._runners.get(name)
            if runner is None or not runner.registered:
                return
            runner.registered = False
            runner.stop.set()
        self._host._feed.notify()
        thread = runner.thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
        try:
            if thread is None or not thread.is_alive():
                self.delivery.release(runner)
            # else: the runner lets go itself after its last advance (wait=False)
        finally:
            with self._progress:
                self._progress.notify_all()

    def delete(self, name: str) -> None:
        """Unregister ``name`` and forget its cursor and dead letters (durably, now)."""
        self.unregister(name)
        self.cursors.forget(name)
        with self._lock:
            self._runners.pop(name, None)

    def replay(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so that delivery continues at ``from_revision``.

        Raises:
            InvalidRequestError: a bad revision, or no trigger of that name.
            HistoryCompactedError: ``from_revision`` is before the retained history.
        """
        if type(from_revision) is not int or from_revision < 1:
            raise InvalidRequestError("from_revision must be an int >= 1")
        oldest = self._host._oldest_revision()
        if from_revision < oldest:
            raise HistoryCompactedError(
                f"revision {from_revision} is before the retention horizon (revision {oldest})",
                horizon=oldest,
            )
        with self._lock:
            runner = self._runners.get(name)
            registered = runner is not None and runner.registered
        if registered:
            assert runner is not None
            self.unregister(name)
        try:
            self.cursors.move(name, min(from_revision - 1, self._host._visible_revision()))
        finally:
            if registered:
                assert runner is not None
                self.register(
                    name,
                    runner.handler,
                    scope=runner.scope,
                    key=runner.key,
                    condition=runner.condition,
                    start="latest",
                )

    # ---- delivery on and off ----------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether delivery runs (``triggers_enabled``)."""
        return self.delivery.enabled

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume every trigger; resuming continues from the cursors."""
        self.delivery.enabled = bool(enabled)
        self._host._feed.notify()

    @property
    def active(self) -> bool:
        """True when at least one trigger is registered."""
        return any(r.registered for r in self._runners.values())

    def registered(self) -> list[str]:
        """The names registered in this process."""
        with self._lock:
            return [name for name, r in self._runners.items() if r.registered]

    # ---- waiting and status -------------------------------------------------------------

    def wait(self, revision: int, timeout: float | None) -> None:
        """Block until every registered trigger's cursor reaches ``revision``.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        step = min(self.cursors.poll_interval, 0.1)
        while True:
            behind = [n for n in self.registered() if self.cursors.position(n) < revision]
            if not behind:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TriggerTimeoutError(
                    f"triggers {', '.join(sorted(behind))} did not reach revision "
                    f"{revision} within {timeout} s"
                )
            with self._progress:
                self._progress.wait(step if remaining is None else min(remaining, step))

    def status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per known trigger: cursor, lag in events, parked count, last error, filters."""
        known = self.cursors.known()
        with self._lock:
            runners = dict(self._runners)
        result: dict[str, dict[str, Any]] = {}
        for name in sorted(set(known) | set(runners)):
            entry = known.get(name, KnownTrigger(0, 0, None))
            runner = runners.get(name)
            cursor = self.cursors.position(name) if runner and runner.registered else entry.cursor
            result[name] = {
                "registered": runner is not None and runner.registered,
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": entry.parked,
                "last_error": runner.last_error if runner else entry.last_error,
                "delivered": runner.delivered if runner else 0,
                "scope": runner.scope if runner else None,
                "key": runner.key if runner else None,
                "enabled": self.delivery.enabled,
            }
        return result

    def pin(self) -> int | None:
        """The lowest cursor retention must keep history for (registered triggers)."""
        return self.cursors.pin(self.registered())

    # ---- dead letters -------------------------------------------------------------------

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The parked events of ``name`` (``revision``, ``event``, ``error``, ``attempts``)."""
        return self.cursors.parked(name)

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget parked events (all, or one revision); returns how many."""
        return self.cursors.drop_parked(name, revision)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run the handler again on parked events, now, in this thread.

        Events that succeed leave the list (their writes through ``event.store`` commit
        with their removal); those that fail again stay parked with the new error. Returns
        the number that succeeded. The trigger must be registered here (its handler is
        needed).
        """
        with self._lock:
            runner = self._runners.get(name)
        if runner is None or not runner.registered:
            self.cursors.parked(name)  # InvalidRequestError for an unknown name
            raise InvalidRequestError(f"trigger {name!r} is not registered")
        todo = [p for p in self.cursors.parked(name) if revision in (None, p["revision"])]
        done = 0
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            for letter in todo:
                records = list(self._host._records(letter["revision"], letter["revision"]))
                if not records:
                    continue  # compacted
                event = TriggerEvent(records[0], name, self.delivery.context)
                try:
                    call_handler(runner.handler, event, loops)
                except Exception as exc:
                    letter["error"] = printable_text(f"{type(exc).__name__}: {exc}")
                    letter["attempts"] += 1
                    self.cursors.update_parked(name, letter)
                    continue
                if self.cursors.unpark(name, letter, event.writes):
                    done += 1
        finally:
            if "loop" in loops:
                loops["loop"].close()
        return done

    def close(self) -> None:
        """Stop every runner and make every cursor durable."""
        with self._lock:
            names = [name for name, r in self._runners.items() if r.registered]
        for name in names:
            self.unregister(name)
        self.delivery.closed = True
        self._host._feed.notify()
        self.cursors.close()
