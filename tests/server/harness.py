"""Helpers of the server tests: a served store, SDK worker set-up, a raw protocol client.

Every wait is bounded by ``WAIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from iii_helpers.observability import ReconnectionConfig
from websockets.sync.client import ClientConnection, connect

import evstate
from evstate.server.app import BackgroundServer

WAIT = 10.0  # seconds any single condition may take before a test fails

# Reconnect fast: tests restart servers and drop connections on purpose.
FAST_RECONNECT = ReconnectionConfig(
    initial_delay_ms=50, max_delay_ms=200, backoff_multiplier=1.5, jitter_factor=0.0
)


def wait_until(condition: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Served:
    """A running server and the store behind it."""

    def __init__(self, store: evstate.Store, background: BackgroundServer) -> None:
        self.store = store
        self.background = background

    @property
    def url(self) -> str:
        return self.background.url

    @property
    def hub(self) -> Any:
        return self.background.server.hub

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's event loop thread and return its result."""

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.background.loop).result(WAIT)

    def trigger_names(self) -> dict[str, int]:
        """The live worker triggers: store trigger name -> registrations."""
        return dict(self.on_loop(self.hub.triggers.names))

    def stop(self) -> None:
        self.background.stop(grace=2.0)


def shutdown(worker: Any) -> None:
    """Shut an SDK worker down (idempotent)."""
    if getattr(worker, "_evstate_test_shut", False):
        return
    worker._evstate_test_shut = True
    worker.shutdown()
    # iii-sdk 0.25.0's shutdown() stops its event loop but never closes it, which leaks
    # the loop's self-pipe (a ResourceWarning, an error under this suite's settings).
    loop = getattr(worker, "_loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def register_state_trigger(worker: Any, function_id: str, **config: Any) -> Any:
    """``worker.register_trigger`` of type ``state`` (which the SDK says is deprecated).

    ``metadata=`` goes beside the config; every other keyword is a config field.
    """
    metadata = config.pop("metadata", None)
    spec: dict[str, Any] = {"type": "state", "function_id": function_id, "config": config}
    if metadata is not None:
        spec["metadata"] = metadata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return worker.register_trigger(spec)


class Raw:
    """A raw WebSocket client speaking frames as dicts (protocol-level tests)."""

    def __init__(self, url: str, **options: Any) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=WAIT, close_timeout=1, compression=None, **options)
        )
        self.registered = self.recv()
        assert self.registered["type"] == "workerregistered"
        self.worker_id: str = self.registered["worker_id"]

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return frame

    def recv_type(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame of type ``kind`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(deadline - time.monotonic(), 0.001))
            if frame.get("type") == kind:
                return frame

    def nothing(self, within: float = 0.3) -> None:
        """Assert that no frame arrives within ``within`` seconds."""
        try:
            frame = self.ws.recv(timeout=within)
        except TimeoutError:
            return
        pytest.fail(f"unexpected frame: {frame!r}")

    def call(
        self, function_id: str, data: Any = None, *, invocation_id: str = "i1", **extra: Any
    ) -> dict[str, Any]:
        """Send an ``invokefunction`` and return its ``invocationresult``."""
        frame = {
            "type": "invokefunction",
            "function_id": function_id,
            "data": data,
            "invocation_id": invocation_id,
            **extra,
        }
        self.send(frame)
        while True:
            answer = self.recv_type("invocationresult")
            if answer["invocation_id"] == invocation_id:
                return answer

    def close(self) -> None:
        self._stack.close()


class WorkerProcess:
    """A worker script run as its own process; its stdout lines are collected."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def values(self) -> list[Any]:
        """The JSON lines printed so far (other lines skipped)."""
        return [json.loads(line) for line in list(self.lines) if line != "ready"]

    def kill(self) -> None:
        """SIGKILL: the connection drops without a close frame, as on a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self._reader.join(WAIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
