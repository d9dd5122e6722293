"""An asyncio facade: :func:`open` returns an :class:`AsyncStore`.

Writes (which may wait for an fsync) and open/close/flush run on a small thread pool, so
they never block the event loop on disk I/O. Reads are answered from memory and never
touch the disk, so they run inline.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import evstate
from evstate.config import Config
from evstate.core.batch import Batch
from evstate.core.store import Store
from evstate.core.view import StateView
from evstate.events import Event

__all__ = ["AsyncBatch", "AsyncStore", "open"]

_T = TypeVar("_T")


class AsyncStore:
    """Async wrapper over a :class:`evstate.Store`; same methods, awaitable.

    Safe to use from several tasks at once; the store serializes writes.
    """

    def __init__(self, store: Store, *, max_workers: int = 8) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="evstate-aio")

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def set(
        self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`evstate.Store.set`."""
        return await self._run(lambda: self.store.set(scope, key, value, ttl_ms=ttl_ms))

    async def ttl(self, scope: str, key: str) -> int | None:
        """See :meth:`evstate.Store.ttl` (answered from memory, inline)."""
        return self.store.ttl(scope, key)

    async def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """See :meth:`evstate.Store.update`."""
        return await self._run(self.store.update, scope, key, ops)

    async def delete(self, scope: str, key: str) -> Any:
        """See :meth:`evstate.Store.delete`."""
        return await self._run(self.store.delete, scope, key)

    async def get(self, scope: str, key: str) -> Any:
        """See :meth:`evstate.Store.get` (answered from memory, inline)."""
        return self.store.get(scope, key)

    async def list(self, scope: str) -> dict[str, Any]:
        """See :meth:`evstate.Store.list` (answered from memory, inline)."""
        return self.store.list(scope)

    async def list_groups(self) -> dict[str, builtins.list[str]]:
        """See :meth:`evstate.Store.list_groups`."""
        return self.store.list_groups()

    async def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`evstate.Store.compare_and_set`."""
        return await self._run(
            lambda: self.store.compare_and_set(scope, key, expected, value, ttl_ms=ttl_ms)
        )

    async def list_keys(self, scope: str) -> builtins.list[str]:
        """See :meth:`evstate.Store.list_keys` (answered from memory, inline)."""
        return self.store.list_keys(scope)

    async def list_entries(self, scope: str, *page: Any, **limits: Any) -> dict[str, Any]:
        """See :meth:`evstate.Store.list_entries` (on the pool: a first page copies a scope)."""
        return await self._run(lambda: self.store.list_entries(scope, *page, **limits))

    def batch(self) -> AsyncBatch:
        """An atomic batch: ``async with astore.batch() as b: b.set(...)``.

        Adding changes is synchronous (nothing is written until the block ends); the
        commit runs on the pool. See :meth:`evstate.Store.batch`.
        """
        return AsyncBatch(self, self.store.batch())

    # ---- history and point-in-time reads: they may read the log, so on the pool -------

    async def history(self, scope: str, key: str, **bounds: Any) -> builtins.list[Event]:
        """See :meth:`evstate.Store.history` (``since``, ``until``, ``limit``)."""
        return await self._run(lambda: self.store.history(scope, key, **bounds))

    async def events(self, *bounds: Any, **filters: Any) -> builtins.list[Event]:
        """See :meth:`evstate.Store.events`; all of them, as a list (it reads the log)."""
        return await self._run(lambda: builtins.list(self.store.events(*bounds, **filters)))

    async def at(self, revision: int | None = None, time: Any = None) -> StateView:
        """See :meth:`evstate.Store.at` (the view's reads are then in memory)."""
        return await self._run(lambda: self.store.at(revision, time))

    async def restore_to(self, path: str | os.PathLike[str], *when: Any, **at: Any) -> str:
        """See :meth:`evstate.Store.restore_to`."""
        return await self._run(lambda: self.store.restore_to(path, *when, **at))

    async def verify(self) -> builtins.list[str]:
        """See :meth:`evstate.Store.verify`."""
        return await self._run(self.store.verify)

    # ---- upkeep ----------------------------------------------------------------------

    async def snapshot(self) -> int:
        """See :meth:`evstate.Store.snapshot`."""
        return await self._run(self.store.snapshot)

    async def compact(self) -> dict[str, Any]:
        """See :meth:`evstate.Store.compact`."""
        return await self._run(self.store.compact)

    async def expire(self) -> int:
        """See :meth:`evstate.Store.expire`."""
        return await self._run(self.store.expire)

    async def stats(self) -> dict[str, Any]:
        """See :meth:`evstate.Store.stats`."""
        return await self._run(self.store.stats)

    # ---- triggers --------------------------------------------------------------------

    def trigger(self, name: str, handler: Any = None, **options: Any) -> Any:
        """See :meth:`evstate.Store.trigger`; registering does not block.

        Handlers run on the trigger's own thread (async ones on that thread's event loop),
        as with the sync store.
        """
        return self.store.trigger(name, handler, **options)

    async def wait_for_triggers(
        self, revision: int | None = None, timeout: float | None = None
    ) -> None:
        """See :meth:`evstate.Store.wait_for_triggers` (waits on the pool)."""
        await self._run(lambda: self.store.wait_for_triggers(revision, timeout))

    async def trigger_status(self) -> dict[str, dict[str, Any]]:
        """See :meth:`evstate.Store.trigger_status`."""
        return self.store.trigger_status()

    async def call(self, function_id: str, payload: Mapping[str, Any] | None = None) -> Any:
        """See :meth:`evstate.Store.call` (runs on the pool: it may write)."""
        return await self._run(self.store.call, function_id, payload)

    async def flush(self) -> None:
        """See :meth:`evstate.Store.flush`."""
        await self._run(self.store.flush)

    async def close(self) -> None:
        """Close the store (durably) and the thread pool."""
        try:
            await self._run(self.store.close)
        finally:
            self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncBatch:
    """The async form of :class:`~evstate.core.batch.Batch` (see :meth:`AsyncStore.batch`)."""

    def __init__(self, owner: AsyncStore, batch: Batch) -> None:
        self._owner = owner
        self.batch = batch
        self.set = batch.set
        self.update = batch.update
        self.delete = batch.delete
        self.compare_and_set = batch.compare_and_set

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None:
            self.batch.__exit__(exc_type, exc, traceback)
            return
        await self._owner._run(self.batch.commit)

    @property
    def events(self) -> builtins.list[Event]:
        """The events committed (after the block)."""
        return self.batch.events

    @property
    def revision(self) -> int | None:
        """The revision of the last event committed (``None`` for an empty batch)."""
        return self.batch.revision


async def open(
    path: str | os.PathLike[str] | None = None,
    *,
    config: str | os.PathLike[str] | Config | None = None,
    **options: Any,
) -> AsyncStore:
    """Open a store off the event loop (recovery reads the log); see :func:`evstate.open`."""
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(None, lambda: evstate.open(path, config=config, **options))
    return AsyncStore(store)
