"""Helpers of the CLI tests: run evstate as a real process, a real ``evstate serve``, a worker.

Every wait is bounded by ``WAIT``; servers listen on loopback, on a port the OS picks.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.server.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0  # seconds any single condition may take before a test fails
CLIENT_ENV = ("EVSTATE_URL", "EVSTATE_AUTH_TOKEN")  # never inherited from the developer's shell


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an evstate process: this one's, minus the client variables."""
    base = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    return {**base, "PYTHONPATH": str(ROOT), **(env or {})}


def run_process(
    *argv: str,
    stdin: str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Result:
    """Run ``python -m evstate ARGS`` as a real process (stderr not a terminal)."""
    proc = subprocess.run(
        [sys.executable, "-m", "evstate", *argv],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=process_env(env),
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class ServeProcess:
    """A real ``python -m evstate serve ARGS`` (``--port 0`` unless a port is given)."""

    def __init__(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, port: bool = True
    ) -> None:
        argv = [*args] if not port or "--port" in args else [*args, "--port", "0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evstate", "serve", *argv],
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=process_env(env),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def url(self) -> str:
        """The ``ws://`` URL from the "listening on" line (waits for it)."""

        def found() -> str | None:
            for line in list(self.lines):
                match = re.search(r"listening on (ws://\S+)", line)
                if match:
                    return match.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"evstate serve exited early: {self.lines}")
            return None

        return str(wait_until(found, what="evstate serve to listen"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM), wait for the exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(WAIT)
        self._reader.join(WAIT)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


class RawWorker:
    """A worker speaking the iii protocol by hand: one function, one ``state`` trigger.

    Every event delivered to the function is put in :attr:`events` and acknowledged.
    """

    def __init__(self, url: str, function_id: str, config: dict[str, Any]) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._resources = contextlib.ExitStack()
        self.ws: ClientConnection = self._resources.enter_context(
            connect(url, open_timeout=WAIT, compression=None)
        )
        assert json.loads(self.ws.recv(timeout=WAIT))["type"] == "workerregistered"
        self.ws.send(json.dumps({"type": "registerfunction", "id": function_id}))
        self.ws.send(
            json.dumps(
                {
                    "type": "registertrigger",
                    "id": "t1",
                    "trigger_type": "state",
                    "function_id": function_id,
                    "config": config,
                }
            )
        )
        # Frames of one connection apply in order: once this call is answered, the trigger
        # is registered.
        call = {
            "type": "invokefunction",
            "invocation_id": "ready",
            "function_id": "state::list_groups",
            "data": {},
        }
        self.ws.send(json.dumps(call))
        while not self._handle(json.loads(self.ws.recv(timeout=WAIT))):
            pass
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _handle(self, frame: dict[str, Any]) -> bool:
        """Record and acknowledge a delivery; True for the answer to the "ready" call."""
        if frame.get("type") == "invokefunction":
            self.events.put(frame["data"])
            answer = {"type": "invocationresult", "invocation_id": frame["invocation_id"]}
            self.ws.send(json.dumps({**answer, "result": None}))
        return frame.get("invocation_id") == "ready"

    def _serve(self) -> None:
        try:
            for message in self.ws:
                self._handle(json.loads(message))
        except Exception:  # the connection ended: the test closed it or the server stopped
            return

    def keys(self, count: int) -> list[str]:
        """The keys of the next ``count`` events delivered (waits for each)."""
        return [self.events.get(timeout=WAIT)["key"] for _ in range(count)]

    def close(self) -> None:
        self._resources.close()
        self._thread.join(WAIT)
