"""The conformance suite: the same tests against every store kind.

``memory``, ``file`` and ``redis`` are stores; ``follower`` is the read half of the contract:
a file store that writes, and a follower of its directory that answers every read
(``get``, ``list``, ``history``, ``events``, ``at``, ``verify``, ``stats``, ...), so the same
assertions hold for what a follower (and the CLI's read commands) answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import evstate
from evstate.backends.redis.store import open_redis
from evstate.core.functions import call_function
from tests.redis.server import RedisServer

KINDS = ["memory", "file", "redis", "follower"]
STORE_KINDS = ["memory", "file", "redis"]  # kinds that run triggers with writes

_READS = frozenset(
    {
        "get",
        "list",
        "list_values",
        "list_groups",
        "list_keys",
        "list_entries",
        "history",
        "events",
        "at",
        "verify",
        "stats",
        "restore_to",
    }
)


class OwnerAndFollower:
    """A file store whose every read is answered by a follower of its directory."""

    def __init__(self, owner: evstate.Store) -> None:
        self._owner = owner
        config = owner.config
        self._follower = evstate.follow(
            owner.path or "",
            live=False,
            max_open_listings=config.max_open_listings,
            listing_idle_ms=config.listing_idle_ms,
        )

    def _synced(self) -> evstate.Follower:
        if not self._follower.closed:
            written = self._owner.revision
            assert self._follower.refresh() >= written
        return self._follower

    def __getattr__(self, name: str) -> Any:
        if name in _READS:
            return getattr(self._synced(), name)
        return getattr(self._owner, name)

    @property
    def revision(self) -> int:
        return self._synced().revision

    def call(self, function_id: str, payload: Any = None) -> Any:
        return call_function(self, function_id, {} if payload is None else payload)

    def close(self) -> None:
        self._synced()
        self._follower.close()
        self._owner.close()

    def __enter__(self) -> OwnerAndFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-conformance")).start()
    yield server
    server.stop()


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    tmp_path: os.PathLike[str], store_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """Open stores of the parametrized kind on one data set; all are closed at the end.

    Every call opens the same data again (the same directory, the same Redis database), so
    for file and redis stores a second call after closing the first is a reopen.
    """
    opened: list[Any] = []
    server: RedisServer | None = None
    if store_kind == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()

    def factory(**options: Any) -> Any:
        if store_kind == "memory":
            store: Any = evstate.open(**options)
        elif store_kind == "file":
            store = evstate.open(os.path.join(tmp_path, "store"), **options)
        elif store_kind == "follower":
            store = OwnerAndFollower(evstate.open(os.path.join(tmp_path, "store"), **options))
        else:
            assert server is not None
            store = open_redis(server.url, lease_ms=1000, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    return make_store()
