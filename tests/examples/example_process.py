"""Run an example program as a real process on a loopback ephemeral port, and talk to it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Example:
    def __init__(self, proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        self.proc = proc
        self.lines = lines
        self.url = ""
        self.output: list[str] = []
        self.claimed: set[int] = set()

    def wait_for_line(self, prefix: str, timeout: float = 20) -> str:
        """The first output line starting with ``prefix`` not returned before (waits)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.output):
                if i not in self.claimed and line.startswith(prefix):
                    self.claimed.add(i)
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.output.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                break
        raise AssertionError(f"no line starting {prefix!r} within {timeout}s: {self.output}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


def start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )


@contextmanager
def running(script: str, *args: str, http: bool = True) -> Iterator[Example]:
    """Start ``examples/<script> ARGS``; yield it once it listens; SIGINT it at the end."""
    with start(script, *args, *(["--port", "0"] if http else [])) as proc:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        pump = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in stdout])
        pump.start()
        example = Example(proc, lines)
        try:
            if http:
                example.url = example.wait_for_line("listening on http://").split()[-1]
                assert example.url.startswith("http://127.0.0.1:")
            yield example
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pump.join(timeout=10)
            while not lines.empty():
                example.output.append(lines.get())
