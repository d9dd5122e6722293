"""``evstate serve``: the iii WebSocket engine over one store (docs/protocol.md).

Embedding: :class:`Server` runs on your asyncio loop, :class:`BackgroundServer` on a thread
of its own; :func:`main` is the ``evstate serve`` command.
"""

from evstate.server.app import BackgroundServer, Server, main

__all__ = ["BackgroundServer", "Server", "main"]
