"""``evstate serve``: run the iii-compatible WebSocket engine (evstate/server.py)."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` subcommand to the command line."""
    cmd = sub.add_parser(
        "serve",
        help="serve the store to iii SDK workers over the engine's WebSocket protocol",
        description="Serve the store to iii SDK workers (the iii engine's WebSocket protocol).",
    )
    cmd.add_argument("--config", help="config.yaml (default: a file store in ./data)")
    cmd.add_argument("--host", help="address to bind (default from config, else 127.0.0.1)")
    cmd.add_argument("--port", type=int, help="port (default from config, else 49134)")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit status."""
    from evstate.server.app import main

    return main(config_path=args.config, host=args.host, port=args.port)
