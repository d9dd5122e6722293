"""What every store kind shares around its data: open, closed, ``with`` and ``call()``.

Also the configuration and the background maintenance thread of the stores that write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from evstate.config import Config
from evstate.core.functions import StateFunctions, call_function
from evstate.core.triggers.manager import TriggerManager
from evstate.errors import StoreClosedError

__all__ = ["Clock", "Closable", "StoreBase", "wall_clock_ms"]

log = logging.getLogger("evstate")

Clock = Callable[[], int]
"""A clock: milliseconds since the Unix epoch (stores take one for tests: ``clock=``)."""


def wall_clock_ms() -> int:
    """The wall clock in ms since the epoch (the default :data:`Clock`)."""
    return time.time_ns() // 1_000_000


class Closable:
    """``closed``, the check every call makes first, and use as a context manager."""

    _closed: bool

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def close(self) -> None:
        """Release what the store holds. Idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StoreBase(Closable):
    """A store that writes: its config, ``call()``, and the maintenance thread.

    Every ``save_interval_ms`` the thread runs :meth:`_maintenance_tick` (snapshots,
    compaction); a failure is logged and the next tick tries again.
    """

    _config: Config
    _stop: threading.Event
    _maintainer: threading.Thread
    _close_lock: threading.Lock
    _triggers: TriggerManager

    @property
    def config(self) -> Config:
        """The configuration this store was opened with."""
        return self._config

    @property
    def failure(self) -> str | None:
        """Why the store has failed closed, or None while it takes writes.

        A store fails closed when an fsync of its log fails (also one run by the
        background syncer, with no call waiting): from then on every write raises
        ``StoreFailedError`` with this text, reads keep working, and only a reopen
        recovers (from the log). Memory and redis stores never fail closed (an unreachable
        Redis is ``BackendUnavailableError``, call by call).
        """
        return None

    def call(self, function_id: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Call a state function by id, like the doc's ``client.call``.

        Accepts ``state::set`` and ``state.set`` spellings (see
        :mod:`evstate.core.functions`). Raises :class:`evstate.Error` subclasses whose
        ``code`` is the iii error code.
        """
        store: StateFunctions = self  # type: ignore[assignment]  # every store kind has them
        return call_function(store, function_id, {} if payload is None else payload)

    def close(self) -> None:
        """Stop the triggers and the maintenance thread, then release the storage.

        Idempotent. Every acknowledged write is durable when it returns.

        Raises:
            StoreFailedError: the final fsync failed (the store is closed anyway).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop_maintenance()
        try:
            self._triggers.close()
        except Exception:  # releasing the storage below still makes acknowledged writes durable
            log.exception("evstate: closing triggers failed")
        finally:
            self._close_storage()

    def _close_storage(self) -> None:
        """Release the storage (after the triggers): fsync and close files, disconnect."""

    def _start_maintenance(self, name: str) -> None:
        self._stop = threading.Event()
        self._maintainer = threading.Thread(target=self._maintenance_loop, name=name, daemon=True)
        self._maintainer.start()

    def _stop_maintenance(self) -> None:
        self._stop.set()
        if self._maintainer is not threading.current_thread():
            self._maintainer.join()

    def _maintenance_tick(self) -> None:
        """What the background thread does every ``save_interval_ms``."""

    def _maintenance_loop(self) -> None:
        interval = self._config.save_interval_ms / 1000.0
        while not self._stop.wait(interval):
            try:
                self._maintenance_tick()
            except StoreClosedError:
                return
            except Exception:  # keep the store serving; the next tick tries again
                log.exception("evstate: background snapshot or compaction failed")
