"""A real ``redis-server`` for the tests: loopback port, temporary directory, AOF always.

Started and stopped by fixtures; no fakeredis. The binary is ``$EVSTATE_REDIS_SERVER``, else
``redis-server`` on ``PATH``, else ``/usr/bin/redis-server``. Without one the redis tests
are skipped, unless ``EVSTATE_REQUIRE_REDIS=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 15.0


def redis_binary() -> str:
    """The redis-server to run, or skip (fail under EVSTATE_REQUIRE_REDIS=1)."""
    found = (
        os.environ.get("EVSTATE_REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    )
    if found is None:
        message = "redis-server not found (apt-get install redis-server, or EVSTATE_REDIS_SERVER)"
        if os.environ.get("EVSTATE_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; ``restart`` keeps the port and the data directory."""

    def __init__(self, directory: Path, *, appendfsync: str = "always") -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync]
        args += ["--dir", str(self.directory), "--logfile", "redis.log"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self.client() as c:
                    if c.ping():
                        return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = (
                    (self.directory / "redis.log").read_text()
                    if (self.directory / "redis.log").exists()
                    else ""
                )
                self.stop(kill=True)
                raise RuntimeError(f"redis-server did not start: {err}\n{log[-2000:]}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (clean shutdown) or SIGKILL (a crash: only the fsynced AOF survives)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self, *, kill: bool = True, down: float = 0.0) -> None:
        self.stop(kill=kill)
        time.sleep(down)
        self.start()

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()
