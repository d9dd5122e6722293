"""evstate: an embeddable event-sourced state store.

The iii engine's State module (``set / get / delete / update / list / list_groups``),
rebuilt on an append-only, checksummed event log. Start with :func:`open`::

    import evstate

    with evstate.open("./data") as store:
        store.set("users", "user_123", {"name": "Alice"})
        store.update("users", "user_123", [evstate.UpdateOp.increment("logins", 1)])

Every name listed in ``__all__`` is public; every other module is internal.
"""

from __future__ import annotations

import os
from typing import Any

from evstate.backends.file.store import FileStore
from evstate.backends.follower.follower import Follower, follow
from evstate.backends.memory.store import MemoryStore
from evstate.config import Config, load_config
from evstate.core.batch import Batch
from evstate.core.store import Store
from evstate.core.triggers.event import TriggerContext, TriggerEvent
from evstate.core.triggers.manager import Trigger
from evstate.core.view import StateView
from evstate.errors import (
    BackendUnavailableError,
    CompareFailedError,
    ConfigError,
    CorruptionError,
    Error,
    FunctionNotFoundError,
    HistoryCompactedError,
    InvalidCursorError,
    InvalidPageLimitsError,
    InvalidRequestError,
    InvalidValueError,
    ListingCapacityError,
    RowTooLargeError,
    StorageError,
    StoreClosedError,
    StoreFailedError,
    StoreLockedError,
    TriggerTimeoutError,
    ValueTooLargeError,
)
from evstate.events import Event
from evstate.ops import UpdateOp

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Batch",
    "CompareFailedError",
    "Config",
    "ConfigError",
    "CorruptionError",
    "Error",
    "Event",
    "Follower",
    "FunctionNotFoundError",
    "HistoryCompactedError",
    "InvalidCursorError",
    "InvalidPageLimitsError",
    "InvalidRequestError",
    "InvalidValueError",
    "ListingCapacityError",
    "RowTooLargeError",
    "StateView",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreFailedError",
    "StoreLockedError",
    "Trigger",
    "TriggerContext",
    "TriggerEvent",
    "TriggerTimeoutError",
    "UpdateOp",
    "ValueTooLargeError",
    "__version__",
    "follow",
    "load_config",
    "open",
]


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    config: str | os.PathLike[str] | Config | None = None,
    **options: Any,
) -> Store:
    """Open a store.

    - ``open()``: an in-memory store (the doc's ``in_memory`` store method).
    - ``open("./data")``: a file-based store in that directory (created if missing).
    - ``open(config="config.yaml")``: the store the config file describes; a ``path``
      given as well overrides its directory.

    ``options`` override config fields (``fsync``, ``fsync_interval_ms``,
    ``segment_size_bytes``, ``max_value_bytes``, ``save_interval_ms``, ...; docs/config.md).

    Raises:
        ConfigError: a bad config file or option (every problem listed).
        StoreLockedError: another process has the directory open for writing.
        CorruptionError: the log is damaged beyond a torn tail.
        StorageError: the directory cannot be created or read.
    """
    if config is None:
        cfg = Config().replace(**{"store_method": "in_memory", **options})
    elif isinstance(config, Config):
        cfg = config.replace(**options) if options else config
    else:
        cfg = load_config(config)
        if options:
            cfg = cfg.replace(**options)
    if cfg.adapter == "redis":
        if path is not None:
            raise ConfigError(["<options>: path: the redis adapter keeps its data in Redis"])
        try:  # redis-py is an optional extra: import it only when asked for
            from evstate.backends.redis.store import RedisStore
        except ImportError as exc:
            raise ConfigError(
                [f"the redis adapter needs redis-py: pip install 'evstate[redis]' ({exc})"]
            ) from exc
        return RedisStore(cfg)  # type: ignore[return-value]  # the same API as Store
    if path is not None:
        cfg = cfg.replace(store_method="file_based", file_path=os.fspath(path))
    if cfg.store_method == "file_based":
        return FileStore(cfg)
    return MemoryStore(cfg)
