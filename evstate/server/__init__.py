"""``evstate serve``: the iii WebSocket engine over one store (docs/protocol.md).

Embedding: :class:`Server` runs on your asyncio loop, :class:`BackgroundServer` on a thread
of its own; the ``evstate serve`` command is :mod:`evstate.cli.serve`.
"""

from evstate.server.app import BackgroundServer, Server

__all__ = ["BackgroundServer", "Server"]
