"""``evstate serve``: an iii-compatible engine that the unmodified iii SDKs connect to.

A WebSocket server speaking the iii engine's worker protocol (docs/protocol.md) over one
evstate store: path ``/`` serves workers (evstate.server.conn), ``/otel`` accepts the
SDKs' telemetry and discards it, any other WebSocket is refused with HTTP 404. With an auth
token configured, a client without ``Authorization: Bearer <token>`` is refused with HTTP
401 during the handshake, before any state is touched. Plain HTTP requests on the same
port (the web console, ``/health``, ``/metrics``) and the console's own WebSocket go to
:class:`~evstate.server.console.ConsoleSite` (docs/console.md).

Two ways in (the ``evstate serve`` command, :mod:`evstate.cli.serve`, runs a
:class:`Server` until SIGINT or SIGTERM):

- :class:`Server`: the asyncio server over a store you opened;
- :class:`BackgroundServer`: a :class:`Server` on its own thread and event loop (tests,
  benchmarks, embedding in a program that is not asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import threading
import weakref
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from evstate.config import Config
from evstate.core.store import Store
from evstate.server.conn import Connection
from evstate.server.console import LIVE_PATH, ConsoleSite
from evstate.server.event_loop import new_event_loop
from evstate.server.hub import Hub
from evstate.server.metrics import CallCounts, CountingStore
from evstate.server.wire import WireConnection

__all__ = [
    "AUTH_TOKEN_ENV",
    "BackgroundServer",
    "SHUTDOWN_GRACE",
    "Server",
    "resolve_auth_token",
]

log = logging.getLogger("evstate.server.app")

AUTH_TOKEN_ENV = "EVSTATE_AUTH_TOKEN"
"""Environment variable holding the bearer token when the config sets none."""

SHUTDOWN_GRACE = 10.0  # seconds in-flight calls get to finish at shutdown


def resolve_auth_token(config: Config) -> str | None:
    """The token clients must present: ``server_auth_token``, else ``$EVSTATE_AUTH_TOKEN``."""
    return config.server_auth_token or os.environ.get(AUTH_TOKEN_ENV) or None


class _TrackedConnection(WireConnection):
    """A :class:`WireConnection` that :meth:`Server.stop` can find before its handshake.

    Browsers open spare connections and leave them idle (to send the next request sooner);
    websockets' shutdown waits for every TCP connection, which for an idle one means its
    ``open_timeout`` (10 s). The server aborts those at shutdown instead.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _OPENING.add(self)


_OPENING: weakref.WeakSet[_TrackedConnection] = weakref.WeakSet()


class Server:
    """The engine over ``store``; run it on an asyncio loop with :meth:`start` / :meth:`stop`.

    ``host`` and ``port`` default to the config's ``server_host`` / ``server_port``
    (port 0 picks a free port: read :attr:`port` after :meth:`start`). ``auth_token``
    defaults to :func:`resolve_auth_token`. ``console_writes`` lets the web console change
    data (``evstate serve --console-writes``); it only reads otherwise. The store stays
    yours: :meth:`stop` does not close it.
    """

    def __init__(
        self,
        store: Store,
        *,
        host: str | None = None,
        port: int | None = None,
        auth_token: str | None = None,
        console_writes: bool = False,
    ) -> None:
        self.store = store
        self.config = store.config
        self.host = host if host is not None else self.config.server_host
        self._port = port if port is not None else self.config.server_port
        self.auth_token = auth_token if auth_token is not None else resolve_auth_token(self.config)
        self._ws_server: WsServer | None = None
        self._hub: Hub | None = None
        self._refusals = 0  # clients refused for want of the token (logged sparingly)
        self.console_writes = console_writes
        self.counts = CallCounts()  # store calls and errors, for /metrics
        self._console: ConsoleSite | None = None
        self.console_url: str | None = None
        """``http://HOST:PORT/``, the web console's address, once started (the CLI logs it)."""

    @property
    def hub(self) -> Hub:
        """The shared connection state (available once started)."""
        if self._hub is None:
            raise RuntimeError("the server is not started")
        return self._hub

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._ws_server is not None:
            for sock in self._ws_server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port`` for clients (the SDKs' ``III_URL``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start accepting connections.

        Raises:
            OSError: the address cannot be bound (in use, not permitted).
        """
        loop = asyncio.get_running_loop()
        self._hub = Hub(CountingStore(self.store, self.counts), self.store, self.config, loop)
        self._console = ConsoleSite(
            self.store,
            self.counts,
            auth_token=self.auth_token,
            bind_host=self.host,
            writes=self.console_writes,
            workers=lambda: len(self.hub.connections),
        )
        self._ws_server = await serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._check_request,
            max_size=self.config.server_max_message_bytes,
            # The SDKs offer permessage-deflate; the engine does not use it, and it costs
            # more CPU than it saves on loopback.
            compression=None,
            max_queue=64,
            create_connection=_TrackedConnection,
        )
        self._console.start()
        self.console_url = "http://" + self.url.removeprefix("ws://") + "/"
        log.info("evstate serve: listening on %s", self.url)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Shut down: stop accepting, let in-flight calls finish, close every connection.

        In-flight calls get up to ``grace`` seconds; then every worker trigger is
        unregistered and every invocation still waiting on a worker fails.
        """
        server = self._ws_server
        if server is None or self._hub is None:
            return
        server.close(close_connections=False)
        await self._hub.shutdown(grace)
        if self._console is not None:
            await self._console.stop()
        for idle in [c for c in _OPENING if c.server is server and c.request is None]:
            idle.transport.abort()  # no request yet: nothing in flight (see _TrackedConnection)
        await server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self._hub.router.shutdown_pool)
        self._ws_server = None

    async def _check_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        console = self._console
        if console is not None and console.handles(request):
            return await console.respond(connection, request)
        path = urlsplit(request.path).path
        if path not in ("/", "/otel"):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        token = self.auth_token
        if token is not None:
            # Exactly one Authorization header: two are a client mistake (401), never a 500.
            given = request.headers.get_all("Authorization")
            presented = given[0] if len(given) == 1 else ""
            expected = f"Bearer {token}".encode()
            if not hmac.compare_digest(presented.encode("utf-8", "replace"), expected):
                self._refusals += 1
                if self._refusals <= 20 or self._refusals % 1000 == 0:  # no log flood
                    log.warning(
                        "evstate serve: refused client #%d from %s: %s",
                        self._refusals,
                        connection.remote_address,
                        "two Authorization headers"
                        if len(given) > 1
                        else "missing or wrong bearer token",
                    )
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="evstate"'
                return response
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, WireConnection)
        path = urlsplit(ws.request.path if ws.request else "/").path
        if path == LIVE_PATH and self._console is not None:
            await self._console.live.serve(ws)
            return
        if path == "/otel":
            # Telemetry (OTLP spans, logs, metrics): accepted so the SDK stops retrying,
            # and discarded.
            ws.start(lambda message: None)
            await ws.wait_closed()
            return
        await Connection(self.hub, ws).run()


class BackgroundServer:
    """A :class:`Server` running on its own thread and event loop.

    ``start()`` returns once it listens (or raises what binding raised); ``stop()``
    shuts it down and joins the thread. The store is not closed. Usable as a context
    manager.
    """

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth_token: str | None = None,
        console_writes: bool = False,
    ) -> None:
        self.server = Server(
            store, host=host, port=port, auth_token=auth_token, console_writes=console_writes
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._grace = SHUTDOWN_GRACE

    @property
    def url(self) -> str:
        """``ws://host:port`` of the running server."""
        return self.server.url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop (for tests that inspect its state)."""
        assert self._loop is not None
        return self._loop

    def start(self) -> BackgroundServer:
        """Start the thread and wait until the server listens.

        Raises:
            OSError: binding failed.
        """
        self._thread = threading.Thread(target=self._run, name="evstate-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Shut the server down (see :meth:`Server.stop`) and join its thread."""
        if self._loop is None or self._thread is None or self._stopped is None:
            return
        stopped = self._stopped
        self._grace = grace
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(lambda: stopped.set())
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await self.server.stop(self._grace)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
