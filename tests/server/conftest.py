"""Fixtures of the server tests: servers on ephemeral loopback ports, real Python iii SDK
workers (``iii-sdk==0.25.0``), raw protocol clients. All are shut down at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from iii import InitOptions, register_worker

import evstate
from evstate.server.app import BackgroundServer
from tests.server.harness import FAST_RECONNECT, WAIT, Raw, Served, shutdown, wait_until


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start servers over fresh stores: ``make_server(file=False, auth_token=None, **options)``.

    ``options`` go to ``evstate.open`` (``max_value_bytes``, ``fsync``, ...); ``config=``
    (a ``Config``) opens the store that config describes; ``path=`` reopens a directory.
    """
    started: list[Served] = []

    def factory(
        *,
        file: bool = False,
        path: Path | None = None,
        auth_token: str | None = None,
        config: Any = None,
        **options: Any,
    ) -> Served:
        if config is not None:
            store = evstate.open(config=config, **options)
        elif path is not None or file:
            store = evstate.open(path or tmp_path / f"store{len(started)}", **options)
        else:
            store = evstate.open(**options)
        background = BackgroundServer(store, auth_token=auth_token).start()
        served = Served(store, background)
        started.append(served)
        return served

    yield factory
    for served in started:
        served.stop()
        served.store.close()


@pytest.fixture
def server(make_server: Callable[..., Served]) -> Served:
    """A server over an in-memory store."""
    return make_server()


@pytest.fixture
def workers() -> Iterator[Callable[..., Any]]:
    """Connect real Python SDK workers: ``workers(url, name=...)``; all shut down at the end."""
    started: list[Any] = []

    def factory(url: str, name: str = "test-worker", **options: Any) -> Any:
        opts = InitOptions(
            worker_name=name,
            otel={"enabled": False},  # the SDK's OTel set-up is process-wide; /otel is tested raw
            enable_metrics_reporting=False,
            invocation_timeout_ms=int(WAIT * 1000),
            reconnection_config=FAST_RECONNECT,
            **options,
        )
        worker = register_worker(url, opts)
        started.append(worker)
        # `connected` comes before the SDK has read `workerregistered` (its worker id)
        wait_until(
            lambda: worker.get_connection_state() == "connected" and worker.worker_id,
            what="SDK connect",
        )
        return worker

    yield factory
    for worker in started:
        shutdown(worker)


@pytest.fixture
def raw() -> Iterator[Callable[..., Raw]]:
    """Open raw protocol clients: ``raw(url)``; all closed at the end."""
    opened: list[Raw] = []

    def factory(url: str, **options: Any) -> Raw:
        client = Raw(url, **options)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK sends III_TOKEN when the environment has one; tests choose auth themselves.
    monkeypatch.delenv("III_TOKEN", raising=False)
    monkeypatch.delenv("EVSTATE_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("OTEL_ENABLED", "false")
