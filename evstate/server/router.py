"""Function routing for ``evstate serve``: built-in functions, worker functions, invocations.

The :class:`Router` owns the function table (which live connection owns which id) and the
invocations the engine has sent to workers and waits on. It runs on the server's event
loop; only :meth:`Router.call_threadsafe` may be called from other threads (the store
trigger threads).

Built-in functions: ``state::*`` and the doc's ``state.*`` aliases (evstate.core.functions),
``kv_server::*`` when the config has the kv_server module (evstate.server.kv), and
``engine::workers::register``. Store calls run on store threads (evstate.server.lanes),
never on the loop: a write may wait for its fsync, or for the write lock a snapshot holds
while it copies the table. A single-key read is answered on the loop (it reads memory and
takes no lock).

Observers (evstate.server.observe) hang off the router: the function table tells them when
sources and targets come and go, and every call path that serves a worker's invocation
(:meth:`Router.call`, :meth:`Router.start_builtin`, :meth:`Router.call_inline`) takes the
:class:`~evstate.server.observe_delivery.ObservedCall` the connection got from
``observers.watch`` (None when nobody observes the function) and reports the outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evstate.config import Config
from evstate.core.functions import FUNCTION_IDS, StateFunctions, call_function
from evstate.server.kv import KV_FUNCTION_IDS, KV_READS, call_kv_function
from evstate.server.lanes import Done, StoreLanes
from evstate.server.observe import Observers
from evstate.server.observe_delivery import ObservedCall
from evstate.server.peer import Peer
from evstate.server.protocol import (
    CallError,
    encode,
    function_not_found,
    stopped,
)

__all__ = [
    "BUILTIN_OWNER",
    "Peer",
    "REGISTER_WORKER",
    "Router",
]

log = logging.getLogger("evstate.server.app")

BUILTIN_OWNER = "evstate"
"""``owner_worker_id`` reported when a worker tries to register a built-in function id."""

REGISTER_WORKER = "engine::workers::register"
_STATE_READS = frozenset({"state::get", "state.get"})


@dataclass(slots=True)
class _Pending:
    """An invocation sent to ``peer``, waiting for its ``invocationresult``."""

    peer: Peer
    function_id: str
    future: asyncio.Future[Any] | concurrent.futures.Future[Any]


def _settle(
    future: asyncio.Future[Any] | concurrent.futures.Future[Any],
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Router:
    """Resolves function ids and carries invocations between callers and owners."""

    def __init__(
        self, store: StateFunctions, config: Config, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._store = store
        self._loop = loop
        self._functions: dict[str, Peer] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Invocation ids are UUID-shaped (as the engine's), unique per server: a random
        # prefix and a counter, cheaper than a uuid4 per call.
        self._id_base = str(uuid.uuid4())[:24]
        self._next_id = 0
        self._builtins: dict[str, Callable[[StateFunctions, str, object], Any]] = dict.fromkeys(
            FUNCTION_IDS, call_function
        )
        self._inline = set(_STATE_READS)
        if config.kv_server:
            self._builtins.update(dict.fromkeys(KV_FUNCTION_IDS, call_kv_function))
            self._inline |= KV_READS
        # fsync "always": a write waits for its fsync, and concurrent writers share one
        # (group commit), so several lanes take one call each: up to 16 writes per fsync.
        # More lanes cost more in GIL hand-offs than they gain (64 lanes measured 25%
        # slower than 16 with 50 calls in flight). Otherwise a write never waits on the
        # disk: one lane taking every queued call at once costs the fewest thread
        # wake-ups (evstate.server.lanes).
        if config.store_method == "file_based" and config.fsync == "always":
            self._lanes = StoreLanes(loop, lanes=16, batch=1, name="evstate-serve-store")
        else:
            self._lanes = StoreLanes(loop, lanes=1, batch=256, name="evstate-serve-store")
        self.closing = False
        self.observers = Observers(self, loop)

    # ---- the function table ------------------------------------------------------------

    def is_builtin(self, function_id: str) -> bool:
        """True for the ids the server itself serves."""
        return function_id in self._builtins or function_id.startswith("engine::")

    def owner(self, function_id: str) -> Peer | None:
        """The live connection that registered ``function_id``, if any."""
        return self._functions.get(function_id)

    def register_function(self, peer: Peer, function_id: str, observe: Any = None) -> str | None:
        """Give ``function_id`` to ``peer``; returns the conflicting owner's id if refused.

        One live owner per id; the same connection registering again is a no-op (but for
        ``observe``, the frame's observe descriptor, which the observers take anew).
        """
        if self.is_builtin(function_id):
            return BUILTIN_OWNER
        owner = self._functions.get(function_id)
        if owner is not None and owner is not peer and not owner.closed:
            return owner.worker_id
        self._functions[function_id] = peer
        self.observers.function_registered(function_id, observe)
        return None

    def unregister_function(self, peer: Peer, function_id: str) -> None:
        """Drop ``function_id`` if ``peer`` owns it (anything else is ignored)."""
        if self._functions.get(function_id) is peer:
            del self._functions[function_id]
            self.observers.function_unregistered(function_id)

    def drop_peer(self, peer: Peer) -> None:
        """Forget a connection that went away: its pending calls and its functions.

        What it was asked fails with ``invocation_stopped``. Call this after its triggers
        were unregistered, so their runners do not advance past the failed delivery.
        """
        for invocation_id, pending in list(self._pending.items()):
            if pending.peer is peer:
                del self._pending[invocation_id]
                _settle(pending.future, error=stopped())
        self.observers.drop_peer(peer)
        for function_id in [f for f, p in self._functions.items() if p is peer]:
            del self._functions[function_id]
            self.observers.function_unregistered(function_id)

    def close(self) -> None:
        """Server shutdown: refuse new calls and fail every invocation still waiting."""
        self.closing = True
        self.observers.close()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            _settle(entry.future, error=stopped())

    def shutdown_pool(self) -> None:
        """Stop the store threads once their queued calls ran (blocking: not on the loop)."""
        self._lanes.close()

    # ---- invocations -------------------------------------------------------------------

    def answers_inline(self, function_id: str) -> bool:
        """True for built-in reads answered on the loop without a thread hop."""
        return function_id in self._inline

    def call_inline(self, function_id: str, data: Any, watch: ObservedCall | None = None) -> Any:
        """Run an inline read (see :meth:`answers_inline`) right here."""
        if watch is None:
            return self._builtins[function_id](self._store, function_id, data)
        try:
            result = self._builtins[function_id](self._store, function_id, data)
        except Exception as exc:
            self.observers.report(watch, error=exc)
            raise
        self.observers.report(watch, result)
        return result

    def start_builtin(
        self, function_id: str, data: Any, done: Done, watch: ObservedCall | None = None
    ) -> bool:
        """Start a built-in store function without a task; ``done(result, error)`` follows.

        The observers in ``watch`` hear of the outcome after ``done`` ran.

        Returns False (and ``done`` is never called) when ``function_id`` is not a
        built-in store function; then use :meth:`call`.

        Raises:
            RuntimeError: the server is closing.
        """
        builtin = self._builtins.get(function_id)
        if builtin is None:
            return False
        if watch is not None:
            done = self._reporting(done, watch)
        self._lanes.submit(done, builtin, self._store, function_id, data)
        return True

    def _reporting(self, done: Done, watch: ObservedCall) -> Done:
        report = self.observers.report

        def done_and_report(result: Any, error: BaseException | None) -> None:
            done(result, error)  # the caller's answer first
            report(watch, result, error)

        return done_and_report

    async def call(
        self,
        function_id: str,
        data: Any,
        *,
        caller: Peer | None = None,
        metadata: Any = None,
        traceparent: str | None = None,
        baggage: str | None = None,
        namespace: str | None = None,
        watch: ObservedCall | None = None,
        observe_depth: int = 0,
    ) -> Any:
        """Invoke ``function_id`` with ``data`` and return its result.

        The observers in ``watch`` hear of the outcome. A worker function is invoked with
        ``observe_depth`` when it is not 0, so that the calls it makes carry it on (the
        observers' loop guard must not be reset by a hop through a worker).

        Raises:
            CallError: unknown function, its worker went away, or the worker answered
                with an error (relayed as it came).
            evstate.Error: a built-in state function failed (its iii code).
        """
        if self.closing:
            raise CallError("invocation_stopped", "Invocation stopped: the server is closing")
        result: Any
        try:
            builtin = self._builtins.get(function_id)
            if builtin is not None:
                if function_id in self._inline:
                    result = builtin(self._store, function_id, data)
                else:
                    result = await self._lanes.run(builtin, self._store, function_id, data)
            elif function_id == REGISTER_WORKER:
                if caller is not None:
                    caller.describe(data)
                result = {"success": True}
            else:
                owner = self._functions.get(function_id)
                if owner is None or owner.closed:
                    raise function_not_found(function_id, namespace or "default")
                future: asyncio.Future[Any] = self._loop.create_future()
                extra = {"observe_depth": observe_depth} if observe_depth else None
                self._send_invocation(
                    owner, function_id, data, metadata, traceparent, baggage, future, extra=extra
                )
                result = await future
        except Exception as exc:
            if watch is not None:
                self.observers.report(watch, error=exc)
            raise
        if watch is not None:
            self.observers.report(watch, result)
        return result

    def forward_void(
        self,
        function_id: str,
        data: Any,
        metadata: Any,
        traceparent: str | None,
        baggage: str | None,
        observe_depth: int = 0,
    ) -> bool:
        """Fire-and-forget a call to a worker function (no ``invocation_id``).

        Returns False if no live worker owns ``function_id``. ``observe_depth`` as in
        :meth:`call`.
        """
        owner = self._functions.get(function_id)
        if owner is None or owner.closed:
            return False
        frame = _invoke_frame(None, function_id, data, metadata, traceparent, baggage)
        if observe_depth:
            frame["observe_depth"] = observe_depth
        owner.post(encode(frame))
        return True

    def activate(
        self, function_id: str, data: Any, metadata: Any, extra: dict[str, Any]
    ) -> asyncio.Future[Any] | None:
        """Send an observer activation; None if no live worker owns ``function_id``.

        The frame carries ``extra`` fields (``activation``, ``observe_depth``).
        """
        owner = self._functions.get(function_id)
        if owner is None or owner.closed or self.closing:
            return None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._send_invocation(owner, function_id, data, metadata, None, None, future, extra=extra)
        return future

    def call_threadsafe(
        self,
        function_id: str,
        data: Any,
        metadata: Any,
        live: Callable[[], bool] = lambda: True,
    ) -> concurrent.futures.Future[Any]:
        """Start a call from any thread (the trigger runners); never blocks.

        ``live()`` is checked on the loop when the call starts; False refuses it. The
        future raises :class:`CallError` (``invocation_stopped`` when refused or once the
        server closes), or ``RuntimeError`` is raised here if the event loop is gone.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(
            self._start_threadsafe, future, function_id, data, metadata, live
        )
        return future

    def _start_threadsafe(
        self,
        future: concurrent.futures.Future[Any],
        function_id: str,
        data: Any,
        metadata: Any,
        live: Callable[[], bool],
    ) -> None:
        if self.closing or not live():
            _settle(future, error=stopped())
            return
        owner = self._functions.get(function_id)
        if owner is not None and not owner.closed:
            self._send_invocation(owner, function_id, data, metadata, None, None, future, now=True)
            return

        async def run() -> None:
            try:
                _settle(future, await self.call(function_id, data, metadata=metadata))
            except BaseException as exc:  # the waiting thread must always be released
                _settle(future, error=exc if isinstance(exc, Exception) else stopped())

        self._keep(self._loop.create_task(run()))

    def _send_invocation(
        self,
        owner: Peer,
        function_id: str,
        data: Any,
        metadata: Any,
        traceparent: str | None,
        baggage: str | None,
        future: asyncio.Future[Any] | concurrent.futures.Future[Any],
        *,
        now: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._next_id += 1
        invocation_id = f"{self._id_base}{self._next_id:012x}"
        frame = _invoke_frame(invocation_id, function_id, data, metadata, traceparent, baggage)
        if extra is not None:
            frame.update(extra)
        try:
            text = encode(frame)
        except (ValueError, TypeError) as exc:  # not JSON data: not from decoded input
            _settle(future, error=CallError("serialization_error", str(exc)))
            return
        self._pending[invocation_id] = _Pending(owner, function_id, future)
        owner.post(text, now=now)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        # The loop holds only weak references to tasks: keep ours until they finish.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resolve(self, peer: Peer, invocation_id: str, frame: dict[str, Any]) -> None:
        """Complete the invocation ``invocation_id`` with a worker's ``invocationresult``.

        Results from a connection other than the one invoked, and late or unknown ids,
        are ignored.
        """
        pending = self._pending.get(invocation_id)
        if pending is None or pending.peer is not peer:
            log.debug("evstate serve: no pending invocation %s", invocation_id)
            return
        del self._pending[invocation_id]
        error = frame.get("error")
        if error is not None:
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
                body = dict(error)
            else:
                code, message, body = None, None, {}
            code = code if isinstance(code, str) else "UNKNOWN"
            message = message if isinstance(message, str) else str(error)
            body.update(code=code, message=message)
            _settle(pending.future, error=CallError(code, message, body))
        else:
            _settle(pending.future, frame.get("result"))


def _invoke_frame(
    invocation_id: str | None,
    function_id: str,
    data: Any,
    metadata: Any,
    traceparent: str | None,
    baggage: str | None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "invokefunction", "function_id": function_id, "data": data}
    if invocation_id is not None:
        frame["invocation_id"] = invocation_id
    if metadata is not None:
        frame["metadata"] = metadata
    if traceparent is not None:
        frame["traceparent"] = traceparent
    if baggage is not None:
        frame["baggage"] = baggage
    return frame
