"""Delivery of observer activations: what a target receives, and how many at once.

An observed invocation is captured as an :class:`ObservedCall` when it starts (with the
observers active at that moment); when it ends, each observer whose ``on`` and filter
accept it gets an *activation*: an ``invokefunction`` of its target carrying the
*envelope* (:func:`envelope`) as ``data``, the observer's ``metadata`` as ``metadata``, an
``activation`` marker ``{observer_id, activation_id}`` and ``observe_depth``.

**Bounds.** An observer has at most ``max_in_flight`` activations running (sent, result
not yet back; :data:`~evstate.server.observe_request.MAX_IN_FLIGHT_CAP` when unset).
Further activations wait in a FIFO of at most :data:`MAX_QUEUED_ACTIVATIONS`; beyond
that they are dropped (counted, logged sparingly) and do not count as fires. Nothing
blocks: sending is posting a frame to the target's connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from evstate.server.observe_request import ObserverSpec
from evstate.server.peer import Peer

__all__ = [
    "ACTIVE",
    "DISPOSED",
    "Dispatcher",
    "ERROR",
    "MAX_QUEUED_ACTIVATIONS",
    "ObservedCall",
    "Observer",
    "PENDING",
    "SUSPENDED",
    "Targets",
    "document",
    "envelope",
    "observe_depth_of",
    "start_call",
]

log = logging.getLogger("evstate.server.app")

# Observer states, as the SDK names them.
PENDING: Final = "pending"
ACTIVE: Final = "active"
SUSPENDED: Final = "suspended"
ERROR: Final = "error"
DISPOSED: Final = "disposed"

MAX_QUEUED_ACTIVATIONS: Final = 1024
"""Activations of one observer waiting for a free ``max_in_flight`` slot, at most."""

_NAMESPACE: Final = "default"  # the one namespace of evstate serve
_CALLER_FIELDS: Final = ("worker_id", "worker_name", "function_id", "invocation_id")


class Targets(Protocol):
    """How activations reach target functions (the router)."""

    def activate(
        self, function_id: str, data: Any, metadata: Any, extra: dict[str, Any]
    ) -> asyncio.Future[Any] | None:
        """Invoke a worker function with ``extra`` fields on the frame.

        None if it has no live owner; else a future that ends with the worker's answer.
        """


@dataclass(eq=False, slots=True)
class Observer:
    """One observer: its spec, the connection that owns it, its state and its counters.

    ``live`` is False once it left the registry; activations already queued may still be
    sent then (an observer that reached ``max_fires`` delivers what it accepted).
    """

    spec: ObserverSpec
    peer: Peer
    state: str = PENDING
    was_active: bool = False
    fires: int = 0
    in_flight: int = 0
    dropped: int = 0
    queued: deque[tuple[dict[str, Any], int]] = field(default_factory=deque)
    expiry: asyncio.TimerHandle | None = None
    live: bool = True


@dataclass(slots=True)
class ObservedCall:
    """An invocation some observer watches, captured when it started."""

    observers: tuple[Observer, ...]
    function_id: str
    invocation_id: str
    input: Any
    metadata: Any
    caller: dict[str, Any] | None
    depth: int
    started_at_ms: int
    started: float  # time.perf_counter() at the start


# Ids the server makes up (activations, void calls): UUID-shaped, unique per process.
_ID_BASE: Final = str(uuid.uuid4())[:24]
_counter = itertools.count(1)


def _fresh_id() -> str:
    return f"{_ID_BASE}{next(_counter):012x}"


def _caller(peer: Peer | None, asserted: Any) -> dict[str, Any] | None:
    """Who made the call, as observers see it.

    What the calling SDK asserts (``function_id``, ``invocation_id``, ``parent``; strings
    only), with the worker stamped from the connection as the engine stamps it, so that a
    worker cannot pose as another.
    """
    caller: dict[str, Any] = {}
    if isinstance(asserted, dict):
        for name in ("function_id", "invocation_id"):
            if type(asserted.get(name)) is str:
                caller[name] = asserted[name]
        parent = asserted.get("parent")
        if isinstance(parent, dict):
            kept = {k: parent[k] for k in _CALLER_FIELDS if type(parent.get(k)) is str}
            if kept:
                caller["parent"] = kept
    if peer is not None:
        caller["worker_id"] = peer.worker_id
        worker_name = peer.info.get("name")
        if type(worker_name) is str:
            caller["worker_name"] = worker_name
    return caller or None


def observe_depth_of(frame: dict[str, Any]) -> int:
    """An ``invokefunction``'s ``observe_depth``: activations it is nested in (0 if unsaid)."""
    depth = frame.get("observe_depth")
    return depth if type(depth) is int and depth > 0 else 0


def start_call(
    observers: tuple[Observer, ...], function_id: str, peer: Peer | None, frame: dict[str, Any]
) -> ObservedCall:
    """Capture an ``invokefunction`` frame's invocation as it starts (input as sent)."""
    asserted_id = frame.get("invocation_id")
    return ObservedCall(
        observers=observers,
        function_id=function_id,
        invocation_id=asserted_id if isinstance(asserted_id, str) else _fresh_id(),
        input=frame.get("data"),
        metadata=frame.get("metadata"),
        caller=_caller(peer, frame.get("caller")),
        depth=observe_depth_of(frame),
        started_at_ms=int(time.time() * 1000),
        started=time.perf_counter(),
    )


def document(call: ObservedCall, output: Any, error: dict[str, Any] | None) -> dict[str, Any]:
    """What filters read.

    ``input``, ``output`` (success) or ``error``, and ``caller`` and ``metadata`` when
    there are some.
    """
    doc: dict[str, Any] = {"input": call.input}
    if error is None:
        doc["output"] = output
    else:
        doc["error"] = error
    if call.caller is not None:
        doc["caller"] = call.caller
    if call.metadata is not None:
        doc["metadata"] = call.metadata
    return doc


def envelope(
    observer: Observer,
    call: ObservedCall,
    doc: dict[str, Any],
    duration_ms: float,
) -> dict[str, Any]:
    """The target's ``data``: the invocation as the observer's ``capture`` lets it see it."""
    capture = observer.spec.capture
    failed = "error" in doc
    out: dict[str, Any] = {
        "observer_id": observer.spec.id,
        "activation_id": _fresh_id(),
        "function_id": call.function_id,
        "namespace": _NAMESPACE,
        "invocation_id": call.invocation_id,
        "status": "error" if failed else "success",
    }
    for name in ("input", "output", "error", "caller", "metadata"):
        if name in capture and name in doc:
            out[name] = doc[name]
    out["started_at_ms"] = call.started_at_ms
    out["duration_ms"] = duration_ms
    return out


class Dispatcher:
    """Sends activations within each observer's ``max_in_flight`` (see the module doc)."""

    def __init__(self, targets: Targets) -> None:
        self._targets = targets

    def offer(self, observer: Observer, data: dict[str, Any], depth: int) -> bool:
        """Send (or queue) one activation; False when it was dropped (queue full)."""
        if observer.in_flight < observer.spec.max_in_flight:
            self._send(observer, data, depth)
            return True
        if len(observer.queued) < MAX_QUEUED_ACTIVATIONS:
            observer.queued.append((data, depth))
            return True
        observer.dropped += 1
        if observer.dropped == 1 or observer.dropped % 1000 == 0:
            log.warning(
                "evstate serve: observer %s: %d activations dropped (%d running, %d queued)",
                observer.spec.id,
                observer.dropped,
                observer.in_flight,
                len(observer.queued),
            )
        return False

    def _send(self, observer: Observer, data: dict[str, Any], depth: int) -> None:
        spec = observer.spec
        extra = {
            "activation": {"observer_id": spec.id, "activation_id": data["activation_id"]},
            "observe_depth": depth,
        }
        future = self._targets.activate(spec.target, data, spec.metadata, extra)
        if future is None:
            # The target left between the match and now; the registry suspends the
            # observer when it hears of it. What waits would fail the same way.
            observer.queued.clear()
            return
        observer.in_flight += 1
        future.add_done_callback(lambda done: self._finished(observer, done))

    def _finished(self, observer: Observer, done: asyncio.Future[Any]) -> None:
        observer.in_flight -= 1
        if not done.cancelled() and (exc := done.exception()) is not None:
            # Activations are not retried (as in iii); the target's error is its own.
            log.debug("evstate serve: activation of observer %s failed: %s", observer.spec.id, exc)
        if observer.queued and observer.in_flight < observer.spec.max_in_flight:
            data, depth = observer.queued.popleft()
            self._send(observer, data, depth)
