"""The CLI's client of a running ``evstate serve``: the state functions over the iii protocol.

:class:`ServerStore` is a small synchronous WebSocket client (``websockets.sync.client``)
with the read and write methods of a store, each one ``invokefunction`` frame of the iii
worker protocol (docs/protocol.md):

- it connects to the URL (``ws://`` or ``wss://``), sending ``Authorization: Bearer TOKEN``
  when it has a token; the server speaks first, with ``workerregistered``;
- each call sends ``{"type": "invokefunction", "invocation_id", "function_id", "data"}`` and
  waits for the ``invocationresult`` of that id: its ``result``, or its ``error``
  (``{code, message}``), raised as :class:`ServerError` (printed ``evstate: CODE: message``);
- a server that cannot be reached, refuses the token or closes the connection raises
  :class:`ServerUnreachableError`, one line naming the URL.

The functions: ``state::get``, ``state::set``, ``state::update``, ``state::delete``,
``state::compare-and-set`` (``set`` and ``compare-and-set`` with evstate's ``ttl_ms`` when
given), ``evstate::ttl``, ``state::list_groups``, ``state::list_keys``, ``state::list``
(values), and ``state::list_entries`` paged for the ``{key: value}`` listing (one
consistent listing, pinned to a revision, however large the scope).
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import ClientConnection, connect

import evstate
from evstate.errors import Error

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "LIST_PAGE",
    "ServerError",
    "ServerStore",
    "ServerUnreachableError",
]

CONNECT_TIMEOUT = 10.0  # seconds for the TCP connection, the handshake and the first frame
CALL_TIMEOUT = 60.0  # seconds a call may wait for its answer
LIST_PAGE = {"limit": 1000, "max_bytes": 8_000_000}  # the largest pages list_entries gives


class ServerError(Error):
    """The server answered a call with an error; ``code`` is the error's code."""

    def __init__(self, code: str, message: str) -> None:
        text = message if message.startswith(code) else f"{code}: {message}"
        super().__init__(text, code=code)


class ServerUnreachableError(Error):
    """The server could not be reached, refused the client, or went away during a call."""

    default_code = "server_unreachable"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerStore:
    """A running server's store, reached over WebSocket; use as a context manager.

    Methods mirror :class:`evstate.Store`'s (same arguments, same results); each is one call
    to the server's state function of that name.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout: float = CALL_TIMEOUT
    ) -> None:
        """Connect to ``url`` and read the server's ``workerregistered`` frame.

        Raises:
            ServerUnreachableError: refused, unreachable, not a WebSocket or evstate server,
                or the token is missing or wrong (HTTP 401).
        """
        self.url = url
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else None
        host = urlsplit(url).hostname or ""
        self._resources = contextlib.ExitStack()
        try:
            connection = connect(
                url,
                additional_headers=headers,
                open_timeout=CONNECT_TIMEOUT,
                compression=None,  # the server does not use it
                max_size=None,  # the server bounds what it sends
                # A proxy from the environment applies to remote servers, never to loopback.
                proxy=None if _is_loopback(host) else True,
                user_agent_header=f"evstate-cli/{evstate.__version__}",
            )
            self._ws: ClientConnection = self._resources.enter_context(connection)
        except InvalidURI as exc:
            raise ServerUnreachableError(f"bad server URL {url!r}: {exc.msg}") from None
        except InvalidStatus as exc:
            raise self._refused(exc.response.status_code) from None
        except InvalidHandshake as exc:
            raise ServerUnreachableError(
                f"{url} did not answer as a WebSocket server: {exc}"
            ) from None
        except TimeoutError:
            raise ServerUnreachableError(
                f"no answer from {url} within {CONNECT_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            hint = " (is evstate serve running there?)" if isinstance(exc, ConnectionError) else ""
            raise ServerUnreachableError(
                f"cannot connect to {url}: {reason.lower()}{hint}"
            ) from None
        try:
            first = self._receive(CONNECT_TIMEOUT)
        except BaseException:
            self.close()
            raise
        if first.get("type") != "workerregistered":
            self.close()
            raise ServerUnreachableError(
                f"{url} is not an evstate or iii server (its first frame was not workerregistered)"
            )

    def _refused(self, status: int) -> ServerUnreachableError:
        if status == 401:
            return ServerUnreachableError(
                f"{self.url} refused the connection (HTTP 401): it needs its auth token; "
                "give it with --token or EVSTATE_AUTH_TOKEN"
            )
        return ServerUnreachableError(f"{self.url} refused the connection (HTTP {status})")

    def _receive(self, timeout: float) -> dict[str, Any]:
        """The next frame as a JSON object (other messages are skipped)."""
        while True:
            try:
                message = self._ws.recv(timeout=timeout)
            except TimeoutError:
                raise ServerUnreachableError(
                    f"no answer from {self.url} within {timeout:.0f} s"
                ) from None
            except ConnectionClosed as exc:
                reason = f": {exc.rcvd.reason}" if exc.rcvd and exc.rcvd.reason else ""
                code = f" (code {exc.rcvd.code}{reason})" if exc.rcvd else ""
                raise ServerUnreachableError(f"{self.url} closed the connection{code}") from None
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            if isinstance(frame, dict):
                return frame

    def call(self, function_id: str, data: dict[str, Any]) -> Any:
        """Invoke ``function_id`` with ``data``; returns its result (None when it sends none).

        Raises:
            ServerError: the function answered with an error.
            ServerUnreachableError: the connection failed or no answer came in time.
        """
        invocation_id = str(uuid.uuid4())
        frame = {
            "type": "invokefunction",
            "invocation_id": invocation_id,
            "function_id": function_id,
            "data": data,
        }
        try:
            self._ws.send(json.dumps(frame, ensure_ascii=False, allow_nan=False))
        except ConnectionClosed:
            raise ServerUnreachableError(f"{self.url} closed the connection") from None
        while True:
            answer = self._receive(self.timeout)
            if answer.get("type") == "ping":
                self._ws.send(json.dumps({"type": "pong"}))
                continue
            if answer.get("type") != "invocationresult":
                continue
            if answer.get("invocation_id") != invocation_id:
                continue
            error = answer.get("error")
            if error is not None:
                if isinstance(error, dict):
                    code = str(error.get("code") or "error")
                    text = str(error.get("message") or "")
                else:
                    code, text = "error", str(error)
                raise ServerError(code, text)
            return answer.get("result")

    # ---- the store's methods ----------------------------------------------------------

    def get(self, scope: str, key: str) -> Any:
        """``state::get``: the value, or None."""
        return self.call("state::get", {"scope": scope, "key": key})

    def set(self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None) -> dict[str, Any]:
        """``state::set`` (with evstate's ``ttl_ms`` when given): ``{old_value, new_value}``."""
        data = {"scope": scope, "key": key, "value": value}
        if ttl_ms is not None:
            data["ttl_ms"] = ttl_ms
        result: dict[str, Any] = self.call("state::set", data)
        return result

    def ttl(self, scope: str, key: str) -> int | None:
        """``evstate::ttl``: milliseconds until ``scope/key`` expires, or None."""
        remaining: int | None = self.call("evstate::ttl", {"scope": scope, "key": key})["ttl_ms"]
        return remaining

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """``state::update``: ``{old_value, new_value}`` (and ``errors`` of skipped ops)."""
        result: dict[str, Any] = self.call(
            "state::update", {"scope": scope, "key": key, "ops": ops}
        )
        return result

    def delete(self, scope: str, key: str) -> Any:
        """``state::delete``: the value deleted, or None."""
        return self.call("state::delete", {"scope": scope, "key": key})

    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]:
        """``state::compare-and-set``: ``{swapped: true}`` or ``{swapped: false, current}``."""
        data = {"scope": scope, "key": key, "expected": expected, "value": value}
        if ttl_ms is not None:
            data["ttl_ms"] = ttl_ms
        result: dict[str, Any] = self.call("state::compare-and-set", data)
        return result

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``state::list_groups``: ``{"groups": [scope, ...]}``."""
        result: dict[str, builtins.list[str]] = self.call("state::list_groups", {})
        return result

    def list_keys(self, scope: str) -> builtins.list[str]:
        """``state::list_keys``: the keys of ``scope``, sorted."""
        keys: builtins.list[str] = self.call("state::list_keys", {"scope": scope})["keys"]
        return keys

    def list_values(self, scope: str) -> builtins.list[Any]:
        """``state::list``: the values of ``scope`` (the engine's listing)."""
        values: builtins.list[Any] = self.call("state::list", {"scope": scope})
        return values

    def list(self, scope: str) -> dict[str, Any]:
        """``{key: value}`` of ``scope``, read page by page with ``state::list_entries``.

        One listing pinned to one revision: consistent however many pages it takes. A scope
        holding an entry larger than a page (8 MB) is read with ``state.list`` instead.
        """
        found: dict[str, Any] = {}
        cursor: str | None = None
        while True:
            try:
                page = self.call(
                    "state::list_entries", {"scope": scope, "cursor": cursor, **LIST_PAGE}
                )
            except ServerError as exc:
                if exc.code != "ROW_TOO_LARGE":
                    raise
                # One entry is larger than the largest page: evstate's state.list sends
                # the whole mapping in one message.
                mapping: dict[str, Any] = self.call("state.list", {"scope": scope})
                return mapping
            for key, value in page["entries"]:
                found[key] = value
            if page["done"]:
                return found
            cursor = page["next_cursor"]

    # ---- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (normal closure). Idempotent."""
        self._resources.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
