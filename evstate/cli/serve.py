"""``evstate serve``: run the iii-compatible WebSocket engine over a store until a signal.

The store is chosen like every other command's: ``--dir``, else the ``--config``'s store
(a directory, Redis, or in memory), else ``./data``; a new store is created only in a
missing or empty directory. ``--host`` and ``--port`` override the config's listener
(``--port 0`` picks a free port).

Logging (stderr, INFO): at start, one line naming the store and its revision, the
server's ``listening on ws://HOST:PORT``, and the console's address when the server has
one (:func:`startup_lines`); then at most one line per connection (the websockets
library's own "connection open" / "connection closed" lines are turned off here). On
SIGINT or SIGTERM the server stops accepting, lets the calls in flight finish, closes
every connection and then the store (every acknowledged write durable), and the command
exits 0. A store or address problem is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import evstate
from evstate import Store
from evstate.cli.common import UsageError, warn
from evstate.cli.target import DEFAULT_DIR, check_new_store_directory
from evstate.errors import Error, StoreLockedError

if TYPE_CHECKING:
    from evstate.server.app import Server

__all__ = ["configure_logging", "register", "run", "startup_lines"]

log = logging.getLogger("evstate.cli.serve")


def configure_logging() -> None:
    """INFO lines with a time on stderr; the websockets library's per-connection lines off.

    websockets logs "connection open" and "connection closed" at INFO for every client
    (and its own "server listening"); the server logs what matters about a connection
    itself, so the library's logger is set to WARNING (its errors still show).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)


def _open_store(args: argparse.Namespace) -> tuple[Store, str]:
    """The store to serve and the words naming it (its directory, Redis URL, or memory).

    Raises:
        UsageError: ``--dir`` with a config whose store is in Redis.
        StorageError: the directory holds other files (a store is never created there).
        StoreLockedError: another process owns the directory.
    """
    config = evstate.load_config(args.config) if args.config else None
    if config is not None and config.adapter == "redis":
        if args.dir:
            raise UsageError(
                f"--dir names a directory, but {args.config} keeps the store in Redis "
                "(the redis adapter): give one of them"
            )
        store = evstate.open(config=config)
        return store, str(getattr(store, "url", config.redis_url))
    if config is not None and config.store_method != "file_based" and not args.dir:
        return evstate.open(config=config), "memory (nothing is kept after it stops)"
    directory = args.dir or (config.file_path if config is not None else DEFAULT_DIR)
    check_new_store_directory(directory)
    try:
        if config is not None:
            return evstate.open(directory, config=config), os.path.abspath(directory)
        return evstate.open(directory), os.path.abspath(directory)
    except StoreLockedError as exc:
        raise StoreLockedError(
            f"{exc.message}; is another evstate serve running on it? Stop it, or serve "
            "another directory (--dir)"
        ) from None


def startup_lines(where: str, store: Store, server: Server) -> list[str]:
    """The lines logged once the server listens (after its own ``listening on`` line).

    The store and its revision; then ``console: URL`` when the server offers a web
    console: the server exposes its address as ``console_url`` (None or absent: no
    console), and this is the one place that logs it.
    """
    lines = [f"evstate serve: data in {where}, at revision {store.revision}"]
    console_url = getattr(server, "console_url", None)
    if console_url:
        lines.append(f"evstate serve: console: {console_url}")
    return lines


async def _serve_until_signal(server: Server, store: Store, where: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            log.info("evstate serve: already shutting down")
        stop.set()

    await server.start()  # logs "evstate serve: listening on ws://HOST:PORT"
    for line in startup_lines(where, store, server):
        log.info("%s", line)
    # Installed until the server has stopped: a second signal during the shutdown must
    # not kill the process halfway through it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await stop.wait()
        log.info("evstate serve: shutting down")
        await server.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM (main thread only): nothing may interrupt the final close."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status (see the module doc).

    Raises:
        UsageError: a port outside 0..65535, or ``--dir`` with a Redis config.
        Error: the config or the store cannot be opened (one line, exit status 1).
    """
    from evstate.server.app import Server  # here: the other commands never load the server
    from evstate.server.event_loop import run as run_loop

    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 1..65535 (or 0: any free port), got {args.port}")
    configure_logging()
    store, where = _open_store(args)
    code = 0
    try:
        server = Server(store, host=args.host, port=args.port, console_writes=args.console_writes)
        run_loop(_serve_until_signal(server, store, where))
    except OSError as exc:
        host = args.host or store.config.server_host
        port = args.port if args.port is not None else store.config.server_port
        warn(f"cannot listen on {host}:{port}: {exc}")
        code = 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        log.info("evstate serve: interrupted while starting")
    finally:
        try:
            with _signals_ignored():
                store.close()
        except Error as exc:
            warn(f"closing the store failed: {exc.message}")
            code = 1
    return code


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` subcommand to the command line."""
    cmd = sub.add_parser(
        "serve",
        help="serve the store to iii SDK workers over the engine's WebSocket protocol",
        description=(
            "Serve the store to iii SDK workers (the iii engine's WebSocket protocol) until "
            "SIGINT or SIGTERM; the CLI's state commands reach it with --url or EVSTATE_URL. "
            "Logs the data directory and its revision, and the address it listens on."
        ),
    )
    cmd.add_argument("--dir", help=f"store directory (default: the config's, else {DEFAULT_DIR})")
    cmd.add_argument(
        "--config", help="config.yaml: the store and the listener (default: a file store)"
    )
    cmd.add_argument("--host", help="address to bind (default from config, else 127.0.0.1)")
    cmd.add_argument(
        "--port",
        type=int,
        help="port, 1..65535, or 0 for any free one (default from config, else 49134)",
    )
    cmd.add_argument(
        "--console-writes",
        action="store_true",
        help="let the web console change data (edit, delete, replay and drop parked events); "
        "it only reads otherwise",
    )
    cmd.set_defaults(handler=run)
