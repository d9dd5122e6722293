"""A few lines of standard-library HTTP plumbing shared by the HTTP examples.

Routes are ``(method, regex, function)``; a function receives the request handler and the
regex groups and returns ``(status, json_body)``. Everything is JSON. Not a framework:
just enough that each example file shows its State calls and little else.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

Route = tuple[str, str, Callable[..., tuple[int, Any]]]


class JsonHandler(BaseHTTPRequestHandler):
    """Dispatches to ``routes``; subclasses (made by :func:`handler_for`) set them."""

    routes: ClassVar[list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any]]]]] = []
    protocol_version = "HTTP/1.1"

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        for route_method, pattern, fn in self.routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                try:
                    status, body = fn(self, *match.groups())
                except ValueError as exc:  # bad JSON, bad input
                    status, body = 400, {"error": str(exc)}
                if status:  # 0: the function wrote the response itself (a stream)
                    self.send_json(status, body)
                return
        self.send_json(404, {"error": f"no route for {method} {path}"})

    def do_GET(self) -> None:  # (http.server's method naming)
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the examples print events
        pass


def handler_for(routes: list[Route]) -> type[JsonHandler]:
    """A handler class serving ``routes``."""
    compiled = [(method, re.compile(regex), fn) for method, regex, fn in routes]
    return type("Handler", (JsonHandler,), {"routes": compiled})


def arguments(description: str, name: str, port: int) -> argparse.ArgumentParser:
    """The options every HTTP example takes: --dir, --host, --port."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--dir", default=f"./example-data/{name}", help=f"store directory (./example-data/{name})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port ({port}; 0 = any free)")
    return parser


def serve(routes: list[Route], host: str, port: int, on_stop: Callable[[], None]) -> None:
    """Serve until SIGINT/SIGTERM; prints ``listening on http://HOST:PORT`` when ready."""
    server = ThreadingHTTPServer((host, port), handler_for(routes))
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        on_stop()
        server.server_close()
        print("stopped", file=sys.stderr, flush=True)
