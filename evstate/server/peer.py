"""What the routing and observe modules need of a worker connection (evstate.server.conn)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Peer"]


class Peer(Protocol):
    """A worker connection as the router and the observer registry see it."""

    worker_id: str
    closed: bool
    info: dict[str, Any]
    """The worker's ``engine::workers::register`` payload (``name``, ``runtime``, ...)."""

    def post(self, text: str, *, now: bool = False) -> None:
        """Queue one frame (already JSON) for sending (``now``: write it at once).

        A closed connection drops it.
        """

    def describe(self, info: Any) -> None:
        """Record the worker's ``engine::workers::register`` payload."""
