"""The event loop ``evstate serve`` runs on: uvloop when it is installed, else asyncio's.

uvloop (libuv under the asyncio API) makes the loop's own work (socket reads and writes,
callbacks) about a third cheaper, and that work is most of a busy server's time (figure 9a
in bench/RESULTS.md). It is a dependency of the package on the platforms it supports; the
server uses only the asyncio API, so it runs the same on either loop. ``EVSTATE_EVENT_LOOP=
asyncio`` forces asyncio's loop (to compare, or to rule uvloop out).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_kind", "new_event_loop", "run"]

_T = TypeVar("_T")


def _uvloop() -> Any:
    if os.environ.get("EVSTATE_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_kind() -> str:
    """``"uvloop"`` or ``"asyncio"``: the loop :func:`new_event_loop` makes."""
    return "uvloop" if _uvloop() is not None else "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind :func:`loop_kind` names."""
    uvloop = _uvloop()
    loop: asyncio.AbstractEventLoop = (
        uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    )
    return loop


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` on a loop from :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
