from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evstate.backends.redis.store import RedisStore, open_redis
from tests.redis.server import RedisServer

LEASE_MS = 1000  # fail-over within about a second in these tests


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A flushed database for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def open_store(redis_url: str) -> Iterator[Callable[..., RedisStore]]:
    """Open RedisStores on the test's database; all are closed at the end."""
    opened: list[RedisStore] = []

    def factory(**options: object) -> RedisStore:
        store = open_redis(redis_url, lease_ms=int(options.pop("lease_ms", LEASE_MS)), **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (for restarts)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop(kill=True)
