"""Observers (iii-sdk 0.25 ``iii.observe``): the registry, their lifecycle and their frames.

A worker connection sends ``observe {id, source, target, ...}`` (evstate.server.observe_request)
and is answered ``observeresult {id, state, error?, warnings?}``. Each observer watches one
source function (a built-in ``state::*`` / ``state.*`` / ``kv_server::*`` function, or a
function a worker registered) and invokes one target (a worker function) for every matching
invocation made over the wire by any connection (evstate.server.observe_delivery).

**States.** ``active`` while the source can be invoked and the target has a live owner;
``pending`` until that is so the first time, ``suspended`` (reason ``SOURCE_UNAVAILABLE`` or
``TARGET_UNAVAILABLE``) when it stops being so later; ``disposed`` at ``max_fires``
(``MAX_FIRES_REACHED``) or after ``expires_in_ms`` (``EXPIRED``); ``error`` when the source
re-registers as something that cannot be observed. Each change after the ``observeresult``
is pushed to the owning connection as ``observerstatechanged {id, state, reason?, fires}``.
An ``unobserve {id}`` removes the observer without an answer (the SDK has already marked it
disposed); the observers of a connection go when it does.

Cost when nobody observes a function: one dict lookup per invocation (:meth:`Observers.watch`).
Everything here runs on the server's event loop and never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final, Protocol

from evstate.server.observe_delivery import (
    ACTIVE,
    DISPOSED,
    ERROR,
    PENDING,
    SUSPENDED,
    Dispatcher,
    ObservedCall,
    Observer,
    Targets,
    document,
    envelope,
    start_call,
)
from evstate.server.observe_request import (
    INVALID_ARGS,
    INVALID_OBSERVER,
    NOT_OBSERVABLE,
    TOO_MANY_OBSERVERS,
    UNSUPPORTED,
    ObserveRefused,
    ObserverSpec,
    read_id,
    read_observe,
)
from evstate.server.peer import Peer
from evstate.server.protocol import encode, error_body, error_of

__all__ = [
    "EXPIRED",
    "MAX_FIRES_REACHED",
    "MAX_OBSERVERS_PER_CONNECTION",
    "MAX_OBSERVE_DEPTH",
    "OBSERVE_FEATURE",
    "Functions",
    "Observers",
    "SOURCE_UNAVAILABLE",
    "TARGET_UNAVAILABLE",
]

log = logging.getLogger("evstate.server.app")

OBSERVE_FEATURE: Final = "observe.v1"
"""Announced in ``workerregistered.features``: without it the SDK never sends ``observe``."""

MAX_OBSERVERS_PER_CONNECTION: Final = 4096
MAX_OBSERVE_DEPTH: Final = 16
"""An invocation made from inside this many nested activations activates nobody (loop guard)."""

# Reasons of state changes.
MAX_FIRES_REACHED: Final = "MAX_FIRES_REACHED"
EXPIRED: Final = "EXPIRED"
SOURCE_UNAVAILABLE: Final = "SOURCE_UNAVAILABLE"
TARGET_UNAVAILABLE: Final = "TARGET_UNAVAILABLE"


class Functions(Targets, Protocol):
    """What the registry needs of the function table (the router)."""

    def is_builtin(self, function_id: str) -> bool:
        """True for the ids the server itself serves."""

    def owner(self, function_id: str) -> Peer | None:
        """The connection that registered ``function_id``, if any."""


def _state_frame(observer: Observer, reason: dict[str, Any] | None) -> str:
    frame: dict[str, Any] = {
        "type": "observerstatechanged",
        "id": observer.spec.id,
        "state": observer.state,
        "fires": observer.fires,
    }
    if reason is not None:
        frame["reason"] = reason
    return encode(frame)


def _error_frame(message: str) -> str:
    """For an ``observe`` / ``unobserve`` without a usable id: nothing else can name it."""
    return encode({"type": "error", "error": error_body(INVALID_OBSERVER, message)})


class Observers:
    """Every observer of the server, by owning connection and by source and target function."""

    def __init__(self, functions: Functions, loop: asyncio.AbstractEventLoop) -> None:
        self._functions = functions
        self._loop = loop
        self._dispatch = Dispatcher(functions)
        # The active observers of each source function, captured by each invocation.
        self._watched: dict[str, tuple[Observer, ...]] = {}
        self._by_peer: dict[Peer, dict[str, Observer]] = {}
        # Insertion-ordered (dicts as sets): activations go out in the order observers came.
        self._by_function: dict[str, dict[Observer, None]] = {}  # by source and by target
        self._descriptors: dict[str, Any] = {}  # `registerfunction.observe` of worker functions
        self._deep = 0  # activations refused by the depth guard (logged sparingly)

    # ---- invocations (the hot path) ----------------------------------------------------

    def watch(
        self, function_id: str, peer: Peer | None, frame: dict[str, Any]
    ) -> ObservedCall | None:
        """An invocation of ``function_id`` starts; None when nobody observes it.

        Else the call as it starts (``frame`` is its ``invokefunction``): what
        :meth:`report` needs when it ends.
        """
        observers = self._watched.get(function_id)
        if observers is None:
            return None
        return start_call(observers, function_id, peer, frame)

    def report(
        self, call: ObservedCall, result: Any = None, error: BaseException | None = None
    ) -> None:
        """The invocation ended: activate each observer it matches. Never raises."""
        try:
            self._report(call, result, error)
        except Exception:  # a bug here must never fail the call it observes
            log.exception("evstate serve: observing %s failed", call.function_id)

    def _report(self, call: ObservedCall, result: Any, error: BaseException | None) -> None:
        duration_ms = (time.perf_counter() - call.started) * 1000
        failed = error is not None
        doc = document(call, result, error_of(error) if error is not None else None)
        for observer in call.observers:
            spec = observer.spec
            if not observer.live or observer.state != ACTIVE:
                continue
            if (spec.on == "success" and failed) or (spec.on == "error" and not failed):
                continue
            if not spec.filter.matches(doc):
                continue
            if call.depth >= MAX_OBSERVE_DEPTH:
                self._deep += 1
                if self._deep == 1 or self._deep % 1000 == 0:
                    log.warning(
                        "evstate serve: observer %s not activated: the call to %s is %d "
                        "activations deep (limit %d; %d refused so far)",
                        spec.id,
                        call.function_id,
                        call.depth,
                        MAX_OBSERVE_DEPTH,
                        self._deep,
                    )
                continue
            data = envelope(observer, call, doc, duration_ms)
            if not self._dispatch.offer(observer, data, call.depth + 1):
                continue
            observer.fires += 1
            if spec.max_fires is not None and observer.fires >= spec.max_fires:
                reason = error_body(MAX_FIRES_REACHED, f"fired {observer.fires} times (max_fires)")
                self._end(observer, DISPOSED, reason, keep_queued=True)

    # ---- frames ------------------------------------------------------------------------

    def on_observe(self, peer: Peer, frame: dict[str, Any]) -> None:
        """``observe``: create, replace or replay one of ``peer``'s observers.

        Every ``observe`` with a usable id gets an ``observeresult``: a replay (same id,
        same frame) the observer's current state, anything else the new observer's state
        or its refusal (``state: "error"``).
        """
        observer_id = read_id(frame)
        if observer_id is None:
            peer.post(_error_frame("observe: `id` must be a non-empty string (1024 chars max)"))
            return
        try:
            self._observe(peer, observer_id, frame)
        except ObserveRefused as exc:
            self._refuse(peer, observer_id, exc.code, exc.message)
        except Exception:  # a bug: still answer, or the worker's ready() waits forever
            log.exception("evstate serve: observe %r from %s failed", observer_id, peer.worker_id)
            self._refuse(peer, observer_id, INVALID_OBSERVER, "the observer could not be read")

    def _observe(self, peer: Peer, observer_id: str, frame: dict[str, Any]) -> None:
        held = self._by_peer.get(peer, {})
        existing = held.get(observer_id)
        if existing is not None:
            if existing.spec.wire == {k: v for k, v in frame.items() if k != "type"}:
                self._answer(existing)  # a replay: its state as it is, fires kept
                return
            self._remove(existing)  # redefined: the old one must not go on, even if refused
        spec = read_observe(frame, observer_id)
        self._check(spec)
        if len(held) >= MAX_OBSERVERS_PER_CONNECTION:
            raise ObserveRefused(
                TOO_MANY_OBSERVERS,
                f"this connection holds {MAX_OBSERVERS_PER_CONNECTION} observers already",
            )
        observer = Observer(spec, peer)
        self._by_peer.setdefault(peer, {})[observer_id] = observer
        for function_id in (spec.source, spec.target):
            self._by_function.setdefault(function_id, {})[observer] = None
        if spec.expires_in_ms is not None:
            observer.expiry = self._loop.call_later(
                spec.expires_in_ms / 1000, self._expire, observer
            )
        observer.state, _ = self._due(observer)
        if observer.state == ACTIVE:
            observer.was_active = True
            self._rewatch(spec.source)
        self._answer(observer)

    @staticmethod
    def _refuse(peer: Peer, observer_id: str, code: str, message: str) -> None:
        error = error_body(code, message)
        peer.post(
            encode({"type": "observeresult", "id": observer_id, "state": ERROR, "error": error})
        )

    def on_unobserve(self, peer: Peer, frame: dict[str, Any]) -> None:
        """``unobserve``: remove one of ``peer``'s observers, silently (an unknown id too)."""
        observer_id = frame.get("id")
        if type(observer_id) is not str:
            peer.post(_error_frame("unobserve: `id` must be a string"))
            return
        observer = self._by_peer.get(peer, {}).get(observer_id)
        if observer is not None:
            self._remove(observer)

    def _answer(self, observer: Observer) -> None:
        answer: dict[str, Any] = {
            "type": "observeresult",
            "id": observer.spec.id,
            "state": observer.state,
        }
        if observer.state != ACTIVE:
            _, reason = self._due(observer)
            if reason is not None:
                answer["warnings"] = [reason["message"]]
        observer.peer.post(encode(answer))

    def _check(self, spec: ObserverSpec) -> None:
        """Refuse what cannot be observed here (see ``read_observe`` for the frame itself)."""
        functions = self._functions
        if spec.source.startswith("engine::"):
            raise ObserveRefused(
                UNSUPPORTED, f"{spec.source} is an engine function: not observable"
            )
        refusal = self._source_refusal(spec.source)
        if refusal is not None:
            raise ObserveRefused(refusal["code"], refusal["message"])
        if spec.args:
            raise ObserveRefused(
                INVALID_ARGS, f"{spec.source} is delivered automatically: it takes no `args`"
            )
        if functions.is_builtin(spec.target):
            raise ObserveRefused(
                UNSUPPORTED,
                f"target {spec.target} is a built-in function; targets are worker functions",
            )

    def _source_refusal(self, function_id: str) -> dict[str, Any] | None:
        """Why a worker function cannot be observed, from its ``registerfunction.observe``."""
        descriptor = self._descriptors.get(function_id)
        if not isinstance(descriptor, dict):
            return None
        if descriptor.get("allow") is False:
            return error_body(NOT_OBSERVABLE, f"{function_id} refuses observers (observe.allow)")
        if descriptor.get("delivery") not in (None, "auto"):
            return error_body(
                UNSUPPORTED,
                f"{function_id} delivers to its observers itself "
                f"(observe.delivery {descriptor.get('delivery')!r}): "
                "evstate serve supports automatic delivery only",
            )
        return None

    # ---- the function table ------------------------------------------------------------

    def function_registered(self, function_id: str, descriptor: Any) -> None:
        """A worker (re)registered ``function_id``.

        ``descriptor`` is its ``registerfunction.observe``. Observers waiting for the
        function may become active; observers of a source that no longer accepts them
        end in ``error``.
        """
        if isinstance(descriptor, dict) and descriptor:
            self._descriptors[function_id] = descriptor
        else:
            self._descriptors.pop(function_id, None)
        refusal = self._source_refusal(function_id)
        for observer in list(self._by_function.get(function_id, ())):
            if refusal is not None and observer.spec.source == function_id:
                self._end(observer, ERROR, refusal)
            else:
                self._refresh(observer)

    def function_unregistered(self, function_id: str) -> None:
        """``function_id`` lost its owner: its observers and those targeting it suspend."""
        self._descriptors.pop(function_id, None)
        for observer in list(self._by_function.get(function_id, ())):
            self._refresh(observer)

    def drop_peer(self, peer: Peer) -> None:
        """A connection went away: its observers go with it (no frames: nobody listens)."""
        for observer in list(self._by_peer.get(peer, {}).values()):
            self._remove(observer)

    def close(self) -> None:
        """Server shutdown: every observer goes, its timers cancelled."""
        for held in list(self._by_peer.values()):
            for observer in list(held.values()):
                self._remove(observer)

    def observer_ids(self, peer: Peer) -> dict[str, str]:
        """``peer``'s observers and their states (for tests and diagnostics)."""
        return {oid: o.state for oid, o in self._by_peer.get(peer, {}).items()}

    def watched(self) -> dict[str, int]:
        """Source function -> number of active observers (for tests and diagnostics)."""
        return {function_id: len(held) for function_id, held in self._watched.items()}

    # ---- lifecycle -----------------------------------------------------------------------

    def _live_owner(self, function_id: str) -> bool:
        owner = self._functions.owner(function_id)
        return owner is not None and not owner.closed

    def _due(self, observer: Observer) -> tuple[str, dict[str, Any] | None]:
        """The state the observer should be in now, and why when not active."""
        spec = observer.spec
        if not self._functions.is_builtin(spec.source) and not self._live_owner(spec.source):
            reason = error_body(
                SOURCE_UNAVAILABLE, f"source {spec.source} is not registered by any worker"
            )
        elif not self._live_owner(spec.target):
            reason = error_body(
                TARGET_UNAVAILABLE, f"target {spec.target} is not registered by any worker"
            )
        else:
            return ACTIVE, None
        return (SUSPENDED if observer.was_active else PENDING), reason

    def _refresh(self, observer: Observer) -> None:
        if not observer.live:
            return
        state, reason = self._due(observer)
        if state == observer.state:
            return
        observer.state = state
        if state == ACTIVE:
            observer.was_active = True
        else:
            observer.queued.clear()  # they would fail: the source or target is gone
        self._rewatch(observer.spec.source)
        observer.peer.post(_state_frame(observer, reason))

    def _expire(self, observer: Observer) -> None:
        observer.expiry = None
        if observer.live:
            ms = observer.spec.expires_in_ms
            self._end(observer, DISPOSED, error_body(EXPIRED, f"expired after {ms} ms"))

    def _end(
        self, observer: Observer, state: str, reason: dict[str, Any], *, keep_queued: bool = False
    ) -> None:
        """Remove the observer and tell its connection why (``disposed`` or ``error``)."""
        self._remove(observer, keep_queued=keep_queued)
        observer.state = state
        observer.peer.post(_state_frame(observer, reason))

    def _remove(self, observer: Observer, *, keep_queued: bool = False) -> None:
        if not observer.live:
            return
        observer.live = False
        if not keep_queued:
            observer.queued.clear()
        if observer.expiry is not None:
            observer.expiry.cancel()
            observer.expiry = None
        spec = observer.spec
        held = self._by_peer.get(observer.peer)
        if held is not None and held.get(spec.id) is observer:
            del held[spec.id]
            if not held:
                del self._by_peer[observer.peer]
        for function_id in (spec.source, spec.target):
            related = self._by_function.get(function_id)
            if related is not None:
                related.pop(observer, None)
                if not related:
                    del self._by_function[function_id]
        self._rewatch(spec.source)

    def _rewatch(self, source: str) -> None:
        active = tuple(
            o
            for o in self._by_function.get(source, ())
            if o.live and o.state == ACTIVE and o.spec.source == source
        )
        if active:
            self._watched[source] = active
        else:
            self._watched.pop(source, None)
