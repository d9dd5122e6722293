from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import CLIENT_ENV, Result, ServeProcess

from evstate.cli.main import main
from tests.redis.server import RedisServer


@pytest.fixture(autouse=True)
def _no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVSTATE_URL / EVSTATE_AUTH_TOKEN of the developer's shell never reach a test."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``evstate ARGS`` in this process; SystemExit becomes its status and message."""

    def run(*argv: str) -> Result:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            out, err = capsys.readouterr()
            if isinstance(exc.code, str):
                return Result(1, out, err + exc.code + "\n")
            return Result(int(exc.code or 0), out, err)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start real ``evstate serve`` processes (in tmp_path); all are stopped at the end."""
    started: list[ServeProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        process = ServeProcess(*args, cwd=tmp_path, env=env)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the CLI tests (skipped where there is none)."""
    server = RedisServer(tmp_path_factory.mktemp("cli-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_config(redis_server: RedisServer, tmp_path: Path) -> str:
    """A config.yaml naming the redis adapter, on a flushed database."""
    redis_server.flush()
    path = tmp_path / "redis.yaml"
    path.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
        f"        config:\n          redis_url: {redis_server.url}\n"
    )
    return str(path)
