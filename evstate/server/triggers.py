"""State triggers registered by workers, as durable store triggers (docs/protocol.md section 4).

A worker's ``registertrigger`` of type ``state`` becomes a store trigger
(:meth:`evstate.Store.trigger`): a projection with its own durable cursor, delivering
events in revision order, one at a time, retrying failures and parking poison events.

**Identity.** The store trigger's name is ``worker:<function_id>:<digest>``, where the
digest is the first 16 hex digits of the SHA-256 of the canonical JSON
``[scope, key, condition_function_id]``. The SDK's trigger ``id`` is a fresh UUID in every
process, so it cannot be the identity; the name above is the same for a worker that
reconnects *or* restarts and registers the same trigger again, which therefore resumes
after the last event it acknowledged (at-least-once). ``metadata`` is not part of the
identity: changing it does not reset the cursor. Registrations with the same identity
(the same trigger registered twice, or by two workers) share one store trigger, so each
event is delivered once per identity; it stops when the last of them goes away, and the
cursor stays.

**Delivery** (the handler below runs on the store trigger's own thread): run
``condition_function_id`` first, if any, with the iii event and no metadata; a result of
exactly JSON ``false`` skips the event, as does a call error (iii's rule), except
``invocation_stopped``, which is not an answer, so it fails the delivery (retried). Then
invoke ``function_id`` with the iii event as ``data`` and the registration's ``metadata``;
its answer is a future the store trigger waits for: one at a time, in revision order, unless
the registration's config asks for ``max_in_flight`` > 1 (an evstate extension: that many
invocations in flight, sent in revision order, which the SDKs may run concurrently). The
cursor passes an event only when it and every event before it were answered. An error
answer is retried with backoff before the cursor moves past it, then parked.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from evstate.core.functions import serde_type
from evstate.core.triggers.event import TriggerEvent
from evstate.server.protocol import INVOCATION_STOPPED, CallError

__all__ = [
    "Invoke",
    "MISSING",
    "MAX_PIPELINE",
    "StateTriggerConfig",
    "TriggerConfigError",
    "TriggerStore",
    "WorkerTriggers",
    "durable_name",
    "parse_trigger_config",
]

log = logging.getLogger("evstate.server.app")

MAX_PIPELINE = 1024
"""The largest ``max_in_flight`` a worker trigger may ask for (an evstate extension of the
``state`` trigger config): that many invocations of it in flight at once, sent in revision
order; the cursor passes an event once it and every one before it were answered. The
default, 1, keeps iii's order: one event at a time (docs/protocol.md, "State triggers")."""

MISSING: Any = object()
"""A ``registertrigger`` frame without a ``config`` key (read as ``{}``)."""

Invoke = Callable[[str, Any, Any, Callable[[], bool]], "concurrent.futures.Future[Any]"]
"""``invoke(function_id, data, metadata, live)``: start a call from any thread; the future
resolves to the result or raises :class:`~evstate.server.protocol.CallError`. ``live()``
is checked on the event loop when the call starts: False refuses it (``invocation_stopped``).
"""


class TriggerStore(Protocol):
    """What worker triggers need of a store (:class:`evstate.Store` has it)."""

    def trigger(
        self,
        name: str,
        handler: Callable[[Any], Any] | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        condition: Callable[[Any], Any] | None = None,
        start: str | int = "latest",
        max_in_flight: int = 1,
    ) -> Any:
        """Register a durable trigger (``Store.trigger``)."""

    def unregister_trigger(self, name: str, *, wait: bool = True) -> None:
        """Stop delivering to ``name``; its cursor is kept."""


class TriggerConfigError(ValueError):
    """A ``state`` trigger config that does not decode (``trigger_registration_failed``)."""

    def __init__(self, detail: str) -> None:
        self.message = f"Failed to parse trigger config: {detail}"
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class StateTriggerConfig:
    """The engine's ``StateTriggerConfig``: ``None`` means any; the rest is exact equality."""

    scope: str | None = None
    key: str | None = None
    condition_function_id: str | None = None
    max_in_flight: int = 1  # evstate extension: pipelined delivery (not part of the identity)


def parse_trigger_config(config: object) -> StateTriggerConfig:
    """Decode a ``state`` trigger config as the engine does (unknown keys ignored).

    A frame without ``config`` (:data:`MISSING`) is read as ``{}``: the engine drops such a
    frame, silently losing the trigger, which helps nobody.

    Raises:
        TriggerConfigError: ``config`` is not an object (``null`` included) or a field is not
            a string or null.
    """
    if config is MISSING:
        return StateTriggerConfig()
    if not isinstance(config, dict):
        raise TriggerConfigError(
            f"invalid type: {serde_type(config)}, expected struct StateTriggerConfig"
        )
    fields: dict[str, str | None] = {}
    for name in ("scope", "key", "condition_function_id"):
        value = config.get(name)
        if value is not None and type(value) is not str:
            raise TriggerConfigError(f"invalid type: {serde_type(value)}, expected a string")
        fields[name] = value
    window = config.get("max_in_flight", 1)
    if window is None:
        window = 1
    if type(window) is not int or not 1 <= window <= MAX_PIPELINE:
        raise TriggerConfigError(
            f"max_in_flight must be an integer from 1 to {MAX_PIPELINE}, got {window!r}"[:200]
        )
    return StateTriggerConfig(
        fields["scope"], fields["key"], fields["condition_function_id"], window
    )


def durable_name(function_id: str, config: StateTriggerConfig) -> str:
    """The store trigger name of a worker trigger (stable across reconnects and restarts)."""
    canonical = json.dumps(
        [config.scope, config.key, config.condition_function_id],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return f"worker:{function_id}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass(eq=False)
class _Durable:
    """One store trigger and the live registrations (``(owner, trigger id)``) sharing it."""

    name: str
    function_id: str
    config: StateTriggerConfig
    metadata: Any = None
    registrations: dict[tuple[object, str], Any] = field(default_factory=dict)
    # False once the last registration is gone. A store runner that is stopping may still
    # be between two calls (condition done, handler next); it must not reach a worker that
    # registered the same trigger again meanwhile, whose own runner delivers that event.
    live: bool = True

    def is_live(self) -> bool:
        return self.live


class WorkerTriggers:
    """The ``state`` triggers of the connected workers, mapped onto store triggers.

    Every method runs on the server's event loop thread and never blocks: registering
    starts a store trigger thread, unregistering uses ``wait=False`` (the runner stops by
    itself without advancing past an event it did not finish).
    """

    def __init__(self, store: TriggerStore, invoke: Invoke) -> None:
        self._store = store
        self._invoke = invoke
        self._durables: dict[str, _Durable] = {}
        self._by_id: dict[tuple[object, str], str] = {}  # (owner, SDK trigger id) -> name

    def register(
        self,
        owner: object,
        trigger_id: str,
        function_id: str,
        config: object,
        metadata: Any,
    ) -> str:
        """Bind ``owner``'s trigger ``trigger_id``; returns the store trigger's name.

        A trigger id the owner already used is replaced (as in the engine). The first
        registration of a name resumes its cursor if the name was seen before (events
        written meanwhile are delivered first, in order), else starts at the newest event.

        Raises:
            TriggerConfigError: ``config`` does not decode.
            evstate.Error: the store refused (``HistoryCompactedError`` when the cursor is
                behind the retained history, ``StoreClosedError``, ...).
        """
        parsed = parse_trigger_config(config)
        ident = (owner, trigger_id)
        name = durable_name(function_id, parsed)
        previous = self._by_id.get(ident)
        if previous == name:  # the same binding again: only the metadata may change
            same = self._durables[name]
            same.registrations[ident] = metadata
            same.metadata = metadata
            return name
        if previous is not None:
            self.unregister(owner, trigger_id)
        durable = self._durables.get(name)
        if durable is None:
            durable = _Durable(name, function_id, parsed, metadata)
            self._store.trigger(
                name,
                self._handler(durable),
                scope=parsed.scope,
                key=parsed.key,
                start="latest",
                max_in_flight=parsed.max_in_flight,
            )
            self._durables[name] = durable
        durable.registrations[ident] = metadata
        durable.metadata = metadata  # the newest registration's metadata is delivered
        self._by_id[ident] = name
        return name

    def unregister(self, owner: object, trigger_id: str) -> None:
        """Remove one registration; an unknown id is not an error (as in the engine)."""
        name = self._by_id.pop((owner, trigger_id), None)
        if name is None:
            return
        durable = self._durables[name]
        del durable.registrations[(owner, trigger_id)]
        if durable.registrations:
            durable.metadata = list(durable.registrations.values())[-1]
            return
        del self._durables[name]
        durable.live = False
        self._store.unregister_trigger(name, wait=False)

    def drop_owner(self, owner: object) -> None:
        """Remove every registration of ``owner`` (a connection that went away)."""
        for held_by, trigger_id in [i for i in self._by_id if i[0] is owner]:
            self.unregister(held_by, trigger_id)

    def close(self) -> None:
        """Remove every registration (server shutdown); cursors stay."""
        for owner, trigger_id in list(self._by_id):
            self.unregister(owner, trigger_id)

    def names(self) -> dict[str, int]:
        """Each live store trigger name with its number of registrations."""
        return {name: len(d.registrations) for name, d in self._durables.items()}

    def _handler(
        self, durable: _Durable
    ) -> Callable[[TriggerEvent], concurrent.futures.Future[Any] | None]:
        invoke = self._invoke

        def deliver(event: TriggerEvent) -> concurrent.futures.Future[Any] | None:
            # Runs on the store trigger's thread. A condition is answered before the
            # handler is invoked; the handler's answer is the returned future, which the
            # store waits for (up to ``max_in_flight`` of them at once, in revision order).
            data = event.to_iii()
            condition = durable.config.condition_function_id
            if condition is not None:
                try:
                    verdict = invoke(condition, data, None, durable.is_live).result()
                except CallError as exc:
                    if exc.code == INVOCATION_STOPPED:
                        raise
                    log.warning(
                        "evstate serve: condition %s of trigger %s failed on revision %d, "
                        "skipping the event (as iii does): %s",
                        condition,
                        durable.name,
                        event.revision,
                        exc,
                    )
                    return None
                if verdict is False:  # exactly JSON false; 0, "", null and {} run
                    return None
            return invoke(durable.function_id, data, durable.metadata, durable.is_live)

        return deliver
