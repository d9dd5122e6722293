"""The State module doc's "Example: Configuration Management", as an HTTP service.

    .venv/bin/python examples/config_management.py           # http://127.0.0.1:8081

- ``GET /config/<key>`` answers the value (``null`` if unset); ``PUT /config/<key>`` with a
  JSON body stores it and answers ``{"success": true}``.
- ``GET /events`` is a Server-Sent Events stream: every connected listener receives
  ``event: config_updated`` with ``{"key", "old_value", "value"}`` for each change. The
  ``on-config-update`` trigger (scope ``config``) broadcasts it: the doc's
  ``stream.send(stream_name='system', group_id='all', ...)``.

Try it: ``curl -N localhost:8081/events`` in one terminal, then
``curl -X PUT localhost:8081/config/theme -d '"dark"'`` in another.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

from _web import JsonHandler, Route, arguments, serve

import evstate

KEEPALIVE_S = 15.0


class Broadcaster:
    """The doc's stream group ``all``: every connected listener gets every message."""

    def __init__(self) -> None:
        self._listeners: set[queue.Queue[dict[str, Any] | None]] = set()
        self._lock = threading.Lock()

    def listen(self) -> queue.Queue[dict[str, Any] | None]:
        listener: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with self._lock:
            self._listeners.add(listener)
        return listener

    def forget(self, listener: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def send(self, message: dict[str, Any]) -> int:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.put(message)
        return len(listeners)

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners), set()
        for listener in listeners:
            listener.put(None)  # ends the stream


def register_triggers(store: evstate.Store, broadcaster: Broadcaster) -> None:
    """The doc's ``on-config-update`` trigger: broadcast each change."""

    @store.trigger("on-config-update", scope="config")
    def on_config_update(event: Any) -> None:
        print(f"Config {event.key} updated: {event.new_value!r}", flush=True)
        broadcaster.send(
            {
                "event_type": "config_updated",
                "data": {"key": event.key, "old_value": event.old_value, "value": event.new_value},
            }
        )


def routes(store: evstate.Store, broadcaster: Broadcaster) -> list[Route]:
    """The doc's http-get-config and http-update-config, and the listeners' stream."""

    def get_config(request: JsonHandler, key: str) -> tuple[int, Any]:
        return 200, store.call("state.get", {"scope": "config", "key": key})

    def put_config(request: JsonHandler, key: str) -> tuple[int, Any]:
        value = request.read_json()
        store.call("state.set", {"scope": "config", "key": key, "value": value})
        return 200, {"success": True}

    def events(request: JsonHandler) -> tuple[int, Any]:
        listener = broadcaster.listen()
        try:
            request.send_response(200)
            request.send_header("Content-Type", "text/event-stream")
            request.send_header("Cache-Control", "no-cache")
            request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(b": connected\n\n")
            request.wfile.flush()
            while True:
                try:
                    message = listener.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    request.wfile.write(b": keepalive\n\n")
                    request.wfile.flush()
                    continue
                if message is None:
                    break
                data = json.dumps(message["data"])
                request.wfile.write(f"event: {message['event_type']}\ndata: {data}\n\n".encode())
                request.wfile.flush()
        except OSError:
            pass  # the listener went away
        finally:
            broadcaster.forget(listener)
            request.close_connection = True
        return 0, None

    return [
        ("GET", r"/config/([^/]+)", get_config),
        ("PUT", r"/config/([^/]+)", put_config),
        ("GET", r"/events", events),
    ]


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "config", 8081).parse_args()
    store = evstate.open(args.dir)
    broadcaster = Broadcaster()
    register_triggers(store, broadcaster)
    print(f"store {store.path} at revision {store.revision}", flush=True)

    def stop() -> None:
        broadcaster.close()
        store.close()

    serve(routes(store, broadcaster), args.host, args.port, stop)


if __name__ == "__main__":
    main()
