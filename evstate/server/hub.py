"""What the worker connections of ``evstate serve`` share: the :class:`Hub`.

The router (function table, invocations, observers), the worker triggers, the live
connections by worker id (for ``reattach``), and the count of calls in flight (for a
graceful shutdown). When a connection ends it is retired here: its triggers are
unregistered FIRST (their store runners stop without advancing past the event in flight),
THEN its observers, functions and pending invocations go (``invocation_stopped``), which
releases the trigger threads waiting on them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

from evstate.config import Config
from evstate.core.functions import StateFunctions
from evstate.server.router import Router
from evstate.server.triggers import TriggerStore, WorkerTriggers

if TYPE_CHECKING:
    from evstate.server.conn import Connection

__all__ = ["Hub"]

log = logging.getLogger("evstate.server.app")


class Hub:
    """The server's shared state, used from its event loop thread only."""

    def __init__(
        self,
        store: StateFunctions,
        trigger_store: TriggerStore,
        config: Config,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.router = Router(store, config, loop)
        self.triggers = WorkerTriggers(trigger_store, self.router.call_threadsafe)
        self.connections: dict[str, Connection] = {}
        self.closing = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self._active = 0  # calls being served, tasks or store jobs
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        """A call started (paired with :meth:`end`)."""
        self._active += 1
        self._idle.clear()

    def end(self) -> None:
        """A call ended."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task the hub keeps alive until it ends."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def retire(self, conn: Connection) -> None:
        """Forget ``conn``: its triggers first, then its pending calls, observers and functions.

        Idempotent; never blocks (the store runners are stopped with ``wait=False``).
        """
        if conn.closed:
            return
        conn.closed = True
        if self.connections.get(conn.worker_id) is conn:
            del self.connections[conn.worker_id]
        self.triggers.drop_owner(conn)
        self.router.drop_peer(conn)
        log.info("evstate serve: worker %s disconnected", conn.label)

    def reattach(self, conn: Connection, previous_worker_id: str, token: str | None) -> None:
        """Retire the connection a reconnecting worker replaces (if its token proves it)."""
        old = self.connections.get(previous_worker_id)
        if old is None or old is conn:
            return
        if token is None or not hmac.compare_digest(token.encode(), old.reattach_token.encode()):
            log.warning(
                "evstate serve: %s sent reattach for %s with a wrong token; ignored",
                conn.label,
                previous_worker_id,
            )
            return
        log.info("evstate serve: %s replaces its previous connection %s", conn.label, old.label)
        self.retire(old)
        self.spawn(old.ws.close(1000, "replaced by a new connection (reattach)"))

    async def shutdown(self, grace: float) -> None:
        """Stop serving, letting in-flight calls finish (up to ``grace`` seconds).

        Then unregister every worker trigger, fail what still waits on a worker, and
        close every connection.
        """
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("evstate serve: %d calls still running at shutdown", self._active)
        self.triggers.close()
        self.router.close()
        for conn in list(self.connections.values()):
            self.retire(conn)
            self.spawn(conn.ws.close(1001, "server shutting down"))
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace)
