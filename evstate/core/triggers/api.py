"""The public trigger methods every store kind shares (a mixin over a TriggerManager)."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from evstate.core.triggers.event import Handler
from evstate.core.triggers.manager import Trigger, TriggerManager

__all__ = ["TriggerMethods", "register_or_decorate"]


def register_or_decorate(register: Callable[[Handler], Any], handler: Handler | None) -> Any:
    """``trigger(name, handler)`` registers now; ``@trigger(name)`` registers the function.

    Returns what ``register`` returns, or (as a decorator) the decorated function unchanged.
    """
    if handler is not None:
        return register(handler)

    def decorator(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        register(fn)
        return fn

    return decorator


class TriggerMethods:
    """``trigger``, ``unregister_trigger``, ``replay_trigger``, status and dead letters."""

    _triggers: TriggerManager

    def _check_open(self) -> None:
        raise NotImplementedError

    def _audit_head(self) -> int:
        raise NotImplementedError

    def trigger(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        condition: Handler | None = None,
        start: str | int = "latest",
        max_in_flight: int = 1,
    ) -> Any:
        """Register a durable state trigger; usable as a decorator.

        ``name`` is the trigger's durable identity: its cursor survives restarts, and
        registering the same name again resumes after the last event it processed (``start``
        only applies to a name seen for the first time: ``"latest"`` = events after now,
        ``"earliest"`` = all retained history, or a revision to start at).

        ``handler(event)`` and ``condition(event)`` may be sync or async. The handler runs
        for events matching ``scope`` and ``key`` (exact, ``None`` = any) for which
        ``condition`` is truthy. It receives a :class:`~evstate.TriggerEvent`; writes through
        ``event.store`` commit atomically with the cursor advance.

        A handler may return a :class:`concurrent.futures.Future` (work that finishes
        elsewhere, such as a remote worker's answer): the event counts as handled when it
        resolves, and as failed if it raises. With ``max_in_flight`` > 1 (at most 1024) up
        to that many such calls overlap, started in revision order; the cursor passes an
        event only when it and every event before it are done, and a failed one is retried
        before the cursor moves past it (events after it may then run first).

        Returns the :class:`~evstate.Trigger` handle, or, used as
        ``@store.trigger("name", ...)``, the decorated function unchanged.

        Raises:
            InvalidRequestError: bad arguments, or the name is already registered.
            HistoryCompactedError: the name's cursor (or ``start``) is before the retained
                history.
            StoreLockedError: (a follower) another process runs a trigger of that name.
        """
        self._check_open()

        def register(fn: Handler) -> Trigger:
            return self._triggers.register(
                name,
                fn,
                scope=scope,
                key=key,
                condition=condition,
                start=start,
                max_in_flight=max_in_flight,
            )

        return register_or_decorate(register, handler)

    def unregister_trigger(self, name: str, *, wait: bool = True) -> None:
        """Stop delivering to ``name``; its cursor is kept (registering again resumes).

        ``wait=False`` returns without waiting for an in-flight handler call to end.
        """
        self._triggers.unregister(name, wait=wait)

    def delete_trigger(self, name: str) -> None:
        """Unregister ``name`` and forget its cursor and parked events."""
        self._triggers.delete(name)

    def replay_trigger(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so that delivery continues at ``from_revision``.

        Raises:
            HistoryCompactedError: ``from_revision`` is before the retained history.
            InvalidRequestError: no trigger of that name, or a bad revision.
        """
        self._triggers.replay(name, from_revision)

    def wait_for_triggers(self, revision: int | None = None, timeout: float | None = None) -> None:
        """Return once every registered trigger has processed up to ``revision``.

        ``revision`` defaults to the current head. For tests and read-your-writes.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        self._triggers.wait(self._audit_head() if revision is None else revision, timeout)

    def trigger_status(self) -> dict[str, dict[str, Any]]:
        """Per known trigger: cursor, lag, parked count, last error and filters.

        Keys: ``registered`` (in this process), ``cursor``, ``lag`` (events behind the head),
        ``parked``, ``last_error``, ``delivered``, ``scope``, ``key``, ``enabled``.
        """
        return self._triggers.status(self._audit_head())

    def parked_events(self, name: str) -> builtins.list[dict[str, Any]]:
        """The dead letters of ``name``: ``revision``, ``event``, ``error``, ``attempts``."""
        return self._triggers.parked(name)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run ``name``'s handler again on its parked events (all, or one); returns successes."""
        return self._triggers.replay_parked(name, revision)

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget ``name``'s parked events (all, or one); returns how many."""
        return self._triggers.drop_parked(name, revision)

    @property
    def triggers_enabled(self) -> bool:
        """Whether triggers deliver in this process; set it to pause or resume (live)."""
        return self._triggers.enabled

    @triggers_enabled.setter
    def triggers_enabled(self, enabled: bool) -> None:
        self._triggers.set_enabled(enabled)
