"""Worker connections of ``evstate serve``: the engine side of the iii wire protocol.

One :class:`Connection` per WebSocket on path ``/``. It speaks first (``workerregistered``),
then reads frames in order: registrations are applied at once, in the order they arrive;
each ``invokefunction`` is started and answered when done, so calls overlap (bounded per
connection: a client with ``MAX_IN_FLIGHT`` calls running is not read until one ends,
which bounds memory instead of queueing without limit). Single-key reads are answered in
line. A bad frame is answered with the engine's error shape when it names an
``invocation_id`` and logged otherwise; it never ends the connection.

Messages come in and go out through :class:`~evstate.server.wire.WireConnection`: whole
frames reach :meth:`Connection._handle` in the loop turn that reads them, and the frames
that became ready together (a batch of store calls, a burst of results) leave in one socket
write. A peer that does not read is not read either until its send buffer drains.

What the connections share is the :class:`~evstate.server.hub.Hub` (evstate.server.hub),
which also retires a connection that ends. ``observe`` / ``unobserve`` frames go to the
router's observers (evstate.server.observe); ``workerregistered`` announces ``observe.v1``
so that the 0.25 SDKs send them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from websockets.exceptions import ConnectionClosed

from evstate.errors import Error
from evstate.server.hub import Hub
from evstate.server.observe import OBSERVE_FEATURE
from evstate.server.observe_delivery import ObservedCall, observe_depth_of
from evstate.server.protocol import (
    DESERIALIZATION_ERROR,
    ENQUEUE_ERROR,
    INVOCATION_STOPPED,
    TRIGGER_REGISTRATION_FAILED,
    CallError,
    FrameError,
    Message,
    decode_frame,
    encode,
    error_body,
    error_of,
    invocation_result,
    optional_str,
    reply_text,
    required_str,
    stopped,
)
from evstate.server.triggers import MISSING, TriggerConfigError
from evstate.server.wire import WireConnection

__all__ = ["MAX_IN_FLIGHT", "Connection", "Hub"]

log = logging.getLogger("evstate.server.app")

MAX_IN_FLIGHT = 1024
"""Invocations one connection may have running before the server stops reading it."""

_BAD_FRAME_LOG_LIMIT = 20  # then one line per 1000, so a garbage flood cannot fill the log

# Frames the engine accepts that have no effect here (logged at debug level).
_IGNORED = frozenset(
    {
        "pong",
        "registerservice",
        "registertriggertype",
        "unregistertriggertype",
        "triggerregistrationresult",
        # observe frames of the owner side (owner delivery, local dispatch): never asked for
        "observerack",
        "invocationsobserved",
        "localinvocationstats",
    }
)


class Connection:
    """One worker's WebSocket (path ``/``)."""

    def __init__(self, hub: Hub, ws: WireConnection) -> None:
        self.hub = hub
        self.ws = ws
        self.worker_id = str(uuid.uuid4())
        self.reattach_token = str(uuid.uuid4())
        self.closed = False
        self.info: dict[str, Any] = {}
        self._in_flight = 0
        self._bad_frames = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "invocationresult": self._on_result,
            "registerfunction": self._on_register_function,
            "unregisterfunction": self._on_unregister_function,
            "registertrigger": self._on_register_trigger,
            "unregistertrigger": self._on_unregister_trigger,
            "ping": self._on_ping,
            "reattach": self._on_reattach,
            "observe": partial(hub.router.observers.on_observe, self),
            "unobserve": partial(hub.router.observers.on_unobserve, self),
        }

    @property
    def label(self) -> str:
        """How logs name this worker: its id and, once it said, its name."""
        name = self.info.get("name")
        return f"{self.worker_id} ({name})" if isinstance(name, str) else self.worker_id

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes, then retire it."""
        hub, ws = self.hub, self.ws
        hub.connections[self.worker_id] = self
        try:
            self.send(
                {
                    "type": "workerregistered",
                    "worker_id": self.worker_id,
                    "reattach_token": self.reattach_token,
                    "features": [OBSERVE_FEATURE],
                }
            )
            # Whole frames arrive through the sink, in the loop turn that reads them;
            # only fragmented messages come out of websockets' reader here.
            ws.start(self._handle)
            async for message in ws:
                ws.slow_pending -= 1
                if self.closed:
                    break
                self._handle(message)
        except ConnectionClosed as exc:
            codes = {frame.code for frame in (exc.rcvd, exc.sent) if frame is not None}
            if 1009 in codes:
                log.warning("evstate serve: %s sent a message over the size limit", self.label)
        finally:
            hub.retire(self)

    def post(self, text: str, *, now: bool = False) -> None:
        """Queue one JSON frame; the outbox is written at the end of this loop turn.

        ``now`` writes the outbox at once instead, for a frame that is alone and latency
        matters (a trigger delivery waits on it). Frames for a connection that is closed
        or closing are dropped (the worker is gone).
        """
        if not self.closed:
            self.ws.queue(text.encode(), flush=now)

    def send(self, frame: dict[str, Any]) -> None:
        """Encode and queue one frame."""
        self.post(encode(frame))

    def describe(self, info: Any) -> None:
        """Keep the worker's ``engine::workers::register`` payload (name, runtime, ...)."""
        if isinstance(info, dict):
            self.info = {k: v for k, v in info.items() if k != "_caller_worker_id"}
            log.info(
                "evstate serve: worker %s registered (%s %s)",
                self.label,
                info.get("runtime"),
                info.get("version"),
            )

    # ---- frames ----------------------------------------------------------------------

    def _handle(self, raw: Message) -> None:
        """Handle one message; never raises (it runs inside websockets' data_received)."""
        if self.closed:
            return
        try:
            frame = decode_frame(raw)
            kind = frame["type"]
            if kind == "invokefunction":
                self._on_invoke(frame)
                return
            handler = self._handlers.get(kind)
            if handler is not None:
                handler(frame)
            elif kind in _IGNORED:
                log.debug("evstate serve: %s sent %s; ignored", self.label, kind)
            else:
                log.warning(
                    "evstate serve: %s sent an unknown frame type %r; ignored",
                    self.label,
                    kind[:100],
                )
        except FrameError as exc:
            self._bad_frame(exc)
        except Exception:  # a bug must cost one frame, never the connection
            log.exception("evstate serve: error handling a frame from %s", self.label)

    def _bad_frame(self, exc: FrameError) -> None:
        self._bad_frames += 1
        if self._bad_frames <= _BAD_FRAME_LOG_LIMIT or self._bad_frames % 1000 == 0:
            log.warning(
                "evstate serve: bad frame #%d from %s: %s",
                self._bad_frames,
                self.label,
                exc.message[:500],
            )
        if exc.invocation_id is not None:
            error = error_body(DESERIALIZATION_ERROR, exc.message)
            self.send(invocation_result(exc.invocation_id, exc.function_id or "", error=error))

    def _on_ping(self, frame: dict[str, Any]) -> None:
        self.send({"type": "pong"})

    def _on_reattach(self, frame: dict[str, Any]) -> None:
        previous = optional_str(frame, "previous_worker_id")
        if previous is not None:
            self.hub.reattach(self, previous, optional_str(frame, "reattach_token"))

    def _on_register_function(self, frame: dict[str, Any]) -> None:
        function_id = required_str(frame, "id", non_empty=True)
        owner = self.hub.router.register_function(self, function_id, frame.get("observe"))
        if owner is None:
            return
        log.warning(
            "evstate serve: %s may not register %s: owned by %s", self.label, function_id, owner
        )
        rejection = {
            "type": "registrationrejected",
            "code": "FUNCTION_NAMESPACE_CONFLICT",
            "namespace": "default",
            "function_id": function_id,
            "owner_worker_id": owner,
        }
        name = self.info.get("name")
        if isinstance(name, str):
            rejection["worker_name"] = name
        self.send(rejection)

    def _on_unregister_function(self, frame: dict[str, Any]) -> None:
        self.hub.router.unregister_function(self, required_str(frame, "id"))

    def _on_register_trigger(self, frame: dict[str, Any]) -> None:
        trigger_id = required_str(frame, "id")
        trigger_type = frame.get("trigger_type")
        function_id = frame.get("function_id")
        failure: str | None = None
        if type(function_id) is not str or not function_id:
            failure = "Failed to parse trigger: `function_id` must be a non-empty string"
        elif trigger_type != "state":
            failure = (
                f"Trigger type {trigger_type!r} is not available: "
                "evstate serve provides the 'state' trigger type only"
            )
        else:
            try:
                name = self.hub.triggers.register(
                    self,
                    trigger_id,
                    function_id,
                    frame.get("config", MISSING),
                    frame.get("metadata"),
                )
                log.info("evstate serve: %s registered trigger %s", self.label, name)
            except TriggerConfigError as exc:
                failure = exc.message
            except Error as exc:
                failure = f"Failed to register trigger: {exc.message}"
        if failure is None:
            return  # the engine answers only failures
        log.warning("evstate serve: trigger %s of %s refused: %s", trigger_id, self.label, failure)
        self.send(
            {
                "type": "triggerregistrationresult",
                "id": trigger_id,
                "trigger_type": trigger_type if isinstance(trigger_type, str) else "",
                "function_id": function_id if isinstance(function_id, str) else "",
                "error": error_body(TRIGGER_REGISTRATION_FAILED, failure),
            }
        )

    def _on_unregister_trigger(self, frame: dict[str, Any]) -> None:
        self.hub.triggers.unregister(self, required_str(frame, "id"))

    def _on_result(self, frame: dict[str, Any]) -> None:
        self.hub.router.resolve(self, required_str(frame, "invocation_id"), frame)

    # ---- invocations -----------------------------------------------------------------

    def _on_invoke(self, frame: dict[str, Any]) -> None:
        function_id = required_str(frame, "function_id")
        invocation_id = optional_str(frame, "invocation_id")
        namespace = optional_str(frame, "namespace")
        traceparent = optional_str(frame, "traceparent")
        baggage = optional_str(frame, "baggage")
        metadata = frame.get("metadata")
        action = frame.get("action")
        kind = action.get("type") if isinstance(action, dict) else None
        if action is not None and kind not in ("void", "enqueue"):
            raise FrameError(
                "Failed to deserialize invokefunction message: `action` must be "
                '{"type": "void"} or {"type": "enqueue", "queue": ...}',
                invocation_id=invocation_id,
                function_id=function_id,
            )
        # A missing `data` is read as null (the engine drops the frame; the caller hangs).
        data = frame.get("data")
        router = self.hub.router
        if isinstance(data, dict) and not router.is_builtin(function_id):
            # As the engine does, for the worker that runs it; the built-in functions
            # ignore unknown fields, so they are spared the copy.
            data = {**data, "_caller_worker_id": self.worker_id}
        if kind == "void":
            invocation_id = None  # void: no reply, ever
        elif kind == "enqueue":
            if invocation_id is not None:
                message = "evstate serve has no queues: enqueue is not supported"
                self._reply(invocation_id, function_id, error=error_body(ENQUEUE_ERROR, message))
            return
        hub = self.hub
        if hub.closing:
            if invocation_id is not None:
                message = "Invocation stopped: the server is closing"
                error = error_body(INVOCATION_STOPPED, message)
                self._reply(invocation_id, function_id, error=error)
            return
        # None unless an observer watches the function (then: the call as it starts).
        watch = router.observers.watch(function_id, self, frame)
        if router.answers_inline(function_id):
            # A read of one key from memory: cheaper to answer here than to hop threads.
            if invocation_id is not None:
                try:
                    result = router.call_inline(function_id, data, watch)
                except Exception as exc:
                    self._reply(invocation_id, function_id, error=error_of(exc))
                else:
                    self._reply(invocation_id, function_id, result)
            return
        if invocation_id is None and not router.is_builtin(function_id):
            # Not observed: the server never learns how a forwarded void call ends.
            depth = observe_depth_of(frame)
            if not router.forward_void(function_id, data, metadata, traceparent, baggage, depth):
                log.warning("evstate serve: void call to unknown function %s", function_id)
            return
        self._started()
        try:
            done = self._finisher(invocation_id, function_id)
            if router.start_builtin(function_id, data, done, watch):
                return
        except RuntimeError:  # the store threads are gone: only during shutdown
            self._ended()
            if invocation_id is not None:
                self._reply(invocation_id, function_id, error=stopped().body)
            return
        hub.spawn(
            self._serve_call(
                invocation_id,
                function_id,
                data,
                metadata=metadata,
                traceparent=traceparent,
                baggage=baggage,
                namespace=namespace,
                watch=watch,
                observe_depth=observe_depth_of(frame),
            )
        )

    def _started(self) -> None:
        self.hub.begin()
        self._in_flight += 1
        if self._in_flight == MAX_IN_FLIGHT:
            self.ws.set_busy(True)  # stop reading this client until a call ends

    def _ended(self) -> None:
        self.hub.end()
        self._in_flight -= 1
        if self._in_flight == MAX_IN_FLIGHT - 1:
            self.ws.set_busy(False)

    def _finisher(
        self, invocation_id: str | None, function_id: str
    ) -> Callable[[Any, BaseException | None], None]:
        def done(result: Any, error: BaseException | None) -> None:
            self._ended()
            if invocation_id is None:
                if error is not None and not isinstance(error, Error):
                    log.error("evstate serve: void call to %s failed: %r", function_id, error)
            elif error is not None:
                self._reply(invocation_id, function_id, error=error_of(error))
            else:
                self._reply(invocation_id, function_id, result)

        return done

    async def _serve_call(
        self,
        invocation_id: str | None,
        function_id: str,
        data: Any,
        *,
        metadata: Any,
        traceparent: str | None,
        baggage: str | None,
        namespace: str | None,
        watch: ObservedCall | None,
        observe_depth: int,
    ) -> None:
        try:
            result = await self.hub.router.call(
                function_id,
                data,
                caller=self,
                metadata=metadata,
                traceparent=traceparent,
                baggage=baggage,
                namespace=namespace,
                watch=watch,
                observe_depth=observe_depth,
            )
        except Exception as exc:
            if invocation_id is None:
                if not isinstance(exc, CallError | Error):
                    log.exception("evstate serve: void call to %s failed", function_id)
            else:
                self._reply(invocation_id, function_id, error=error_of(exc))
        else:
            if invocation_id is not None:
                self._reply(invocation_id, function_id, result)
        finally:
            self._ended()

    def _reply(
        self,
        invocation_id: str,
        function_id: str,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.post(reply_text(invocation_id, function_id, result, error))
