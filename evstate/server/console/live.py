"""The console's live channel: the WebSocket ``/console/live`` every open page keeps.

From the server, JSON messages:

- ``{"type": "hello", "revision", "writes"}`` when the page connects;
- ``{"type": "revision", "revision"}`` within :data:`WATCH_SECONDS` of the store's revision
  moving (several writes in that time make one message);
- ``{"type": "sample", "sample": {...}}`` every stats sample (once a second): the
  ``/stats`` charts grow by it, the triggers page refreshes on it;
- ``{"type": "reply", "id", "ok": true, "result"}`` or ``{"type": "reply", "id",
  "ok": false, "error": {"code", "message"}}`` for each action the page sent.

From the page: ``{"type": "action", "id", "action", ...}`` (evstate.server.console.actions).

How it watches the store: while pages are open, a task reads ``store.revision`` every
:data:`WATCH_SECONDS` and broadcasts when it moved. This needs no trigger (nothing durable
is created for a browser tab) and costs nothing per write, however fast the writers go.
The read runs on a console thread: for the file and memory stores it is an attribute, but
the redis store asks Redis, which must never block the event loop. The sampler task calls
``store.stats()`` on a console thread once a second and keeps the sample
(evstate.server.console.sampler).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed

from evstate.core.store import Store
from evstate.errors import Error
from evstate.server.console.actions import ActionRefused, ConsoleActions
from evstate.server.console.sampler import SAMPLE_SECONDS, StatsSampler
from evstate.server.protocol import Message
from evstate.server.wire import WireConnection

__all__ = ["MAX_LIVE_CONNECTIONS", "WATCH_SECONDS", "LiveChannel"]

log = logging.getLogger("evstate.server.app")

WATCH_SECONDS = 0.2
MAX_LIVE_CONNECTIONS = 256
"""Open console pages at once; more are refused (each costs a socket and a broadcast)."""

_MAX_ACTIONS_IN_FLIGHT = 8  # per page: more are refused, so one tab cannot queue without end


class LiveChannel:
    """The open console pages and what is broadcast to them (event loop only)."""

    def __init__(
        self,
        store: Store,
        sampler: StatsSampler,
        actions: ConsoleActions,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.store = store
        self.sampler = sampler
        self.actions = actions
        self._executor = executor
        self.pages: set[WireConnection] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start watching the revision and sampling the stats (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch(), name="evstate-console-watch"),
            loop.create_task(self._sample(), name="evstate-console-sample"),
        ]

    async def stop(self) -> None:
        """Stop the tasks and close every open page's socket."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for ws in list(self.pages):
            await ws.close(1001, "server shutting down")

    def _broadcast(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, allow_nan=False).encode()
        for ws in self.pages:
            ws.queue(data)

    async def _revision(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.store.revision)

    async def _watch(self) -> None:
        last = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if not self.pages:
                continue
            try:
                revision = await self._revision()
            except Error:  # closed, or its backend unreachable: /health says so
                continue
            if revision != last:
                last = revision
                self._broadcast({"type": "revision", "revision": revision})

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                stats = await loop.run_in_executor(self._executor, self.store.stats)
            except Error:  # closed or unreachable: /health says so; keep the charts as they are
                stats = None
            except Exception:
                log.exception("evstate serve: console: reading the store's stats failed")
                stats = None
            if stats is not None:
                sample = self.sampler.add(stats)
                if self.pages:
                    self._broadcast({"type": "sample", "sample": sample})
            await asyncio.sleep(SAMPLE_SECONDS)

    async def serve(self, ws: WireConnection) -> None:
        """Serve one page's socket until it closes."""
        if len(self.pages) >= MAX_LIVE_CONNECTIONS:
            await ws.close(1013, "too many console pages open")
            return
        in_flight = [0]

        def on_message(raw: Message) -> None:
            self._on_message(ws, raw, in_flight)

        self.pages.add(ws)
        try:
            try:
                revision: int | None = await self._revision()
            except Error:
                revision = None
            hello = {"type": "hello", "revision": revision, "writes": self.actions.writes}
            ws.queue(json.dumps(hello).encode())
            # Whole frames arrive through the sink; fragmented ones come out of the reader.
            ws.start(on_message)
            async for message in ws:
                ws.slow_pending -= 1
                on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.pages.discard(ws)

    def _on_message(self, ws: WireConnection, raw: Message, in_flight: list[int]) -> None:
        """Start the action a page sent (never raises: it runs inside data_received)."""
        try:
            message = json.loads(bytes(raw) if isinstance(raw, memoryview) else raw)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "action":
            return
        reply_id = message.get("id")
        if in_flight[0] >= _MAX_ACTIONS_IN_FLIGHT:
            self._reply(ws, reply_id, error=("busy", "too many actions at once; wait"))
            return
        in_flight[0] += 1
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self.actions.run, message
        )

        def done(finished: asyncio.Future[dict[str, Any]]) -> None:
            in_flight[0] -= 1
            exc = finished.exception()
            if exc is None:
                self._reply(ws, reply_id, result=finished.result())
            elif isinstance(exc, ActionRefused | Error):
                self._reply(ws, reply_id, error=(exc.code, exc.message))
            else:
                log.error("evstate serve: console action failed: %r", exc)
                self._reply(ws, reply_id, error=("internal", "the action failed; see the log"))

        future.add_done_callback(done)

    @staticmethod
    def _reply(
        ws: WireConnection,
        reply_id: Any,
        *,
        result: Any = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        message: dict[str, Any] = {"type": "reply", "id": reply_id, "ok": error is None}
        if error is None:
            message["result"] = result
        else:
            message["error"] = {"code": error[0], "message": error[1]}
        ws.queue(json.dumps(message, allow_nan=False, default=str).encode())
