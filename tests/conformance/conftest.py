"""The adapter conformance suite: the same tests against the memory, file and redis stores."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import evstate
from evstate.backends.redis.store import open_redis
from tests.redis.server import RedisServer

KINDS = ["memory", "file", "redis"]


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
