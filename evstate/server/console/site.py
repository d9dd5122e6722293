"""Everything ``evstate serve`` answers over plain HTTP, on the WebSocket's own port.

``websockets`` hands every request to the server before its WebSocket handshake; the server
gives the ones :meth:`ConsoleSite.handles` claims to :meth:`ConsoleSite.respond`: every
request that is not a WebSocket upgrade, and the console's own WebSocket
(``/console/live``). Workers' WebSockets (``/``, ``/otel``) stay the server's.

- ``/``, ``/scopes/<scope>``, ``/scopes/<scope>/keys/<key>``, ``/triggers``, ``/stats``:
  the console pages (evstate.server.console.pages); without the token, a redirect to
  ``/login``;
- ``/console/live``: the pages' WebSocket (evstate.server.console.live): the token, and an
  ``Origin`` of this server;
- ``/login``, ``/console/session``, ``/logout``: the browser login
  (evstate.server.console.auth), open;
- ``/health``: open, but only ``{"status": ...}`` without the token;
- ``/metrics``: Prometheus text (evstate.server.metrics), with the token;
- ``/static/<file>``: the console's CSS, script and chart library, shipped in the package,
  open.

Pages are rendered with Jinja2 templates with autoescaping on: keys and values are user
data and every one of them is escaped. Store calls and rendering run on a small pool of
console threads, never on the event loop, so a large page never delays a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from evstate.core.store import Store
from evstate.errors import (
    Error,
    HistoryCompactedError,
    InvalidCursorError,
    InvalidRequestError,
    ListingCapacityError,
    StorageError,
    StoreClosedError,
)
from evstate.server.console.actions import ConsoleActions
from evstate.server.console.auth import Gate
from evstate.server.console.http import (
    BadRequest,
    HttpRequest,
    html_response,
    is_websocket_upgrade,
    json_response,
    parse_request,
    quote_segment,
    redirect,
    respond,
    text_response,
)
from evstate.server.console.live import LiveChannel
from evstate.server.console.pages import Page, Pages
from evstate.server.console.sampler import StatsSampler
from evstate.server.metrics import CallCounts, CountingStore, ServerMetrics, health_report

__all__ = ["LIVE_PATH", "ConsoleSite"]

log = logging.getLogger("evstate.server.app")

LIVE_PATH = "/console/live"
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_PAGES = frozenset({"", "scopes", "triggers", "stats"})
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def _bytes(value: Any) -> str:
    size, unit = float(value or 0), 0
    while size >= 1024 and unit < len(_BYTE_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:,.0f} B" if unit == 0 else f"{size:,.1f} {_BYTE_UNITS[unit]}"


def _duration(seconds: Any) -> str:
    left = int(seconds or 0)
    if left < 60:
        return f"{left} s"
    if left < 3600:
        return f"{left // 60} min {left % 60} s"
    return f"{left // 3600} h {left % 3600 // 60} min"


def _url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def _scope_url(scope: str, **params: Any) -> str:
    return _url("/scopes/" + quote_segment(scope), **params)


def _key_url(scope: str, key: str, **params: Any) -> str:
    return _url(f"/scopes/{quote_segment(scope)}/keys/{quote_segment(key)}", **params)


class ConsoleSite:
    """The HTTP endpoints of the module doc, over one store.

    ``counts`` are the server's call counts (``/metrics``); ``connections()`` answers the
    open worker connections. ``writes`` allows the console's changes (``--console-writes``).
    """

    def __init__(
        self,
        store: Store,
        counts: CallCounts,
        *,
        auth_token: str | None,
        bind_host: str,
        writes: bool,
        workers: Callable[[], int],
    ) -> None:
        self.store = store
        self.counts = counts
        self.gate = Gate(auth_token, bind_host)
        self.writes = writes
        self._workers = workers
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="evstate-console"
        )
        self.sampler = StatsSampler()
        self.pages = Pages(store, self.sampler, writes=writes)
        actions = ConsoleActions(store, CountingStore(store, counts), writes=writes)
        self.live = LiveChannel(store, self.sampler, actions, self.executor)
        self.metrics = ServerMetrics(store, counts, self.connections, self.sampler.snapshot_age)
        self.templates = Environment(
            loader=PackageLoader("evstate.server.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(url=_url, scope_url=_scope_url, key_url=_key_url)
        self.templates.filters.update(num=_number, bytes=_bytes, duration=_duration)
        # The macros, as a global: a block rendered alone (a live refresh) sees them too.
        self.templates.globals["ui"] = self.templates.get_template("_macros.html").module
        static = resources.files("evstate.server.console").joinpath("static")
        self._static = {
            entry.name: entry.read_bytes()
            for entry in static.iterdir()
            if entry.is_file() and "." + entry.name.rsplit(".", 1)[-1] in _STATIC_TYPES
        }
        self._refused_logins = 0

    def connections(self) -> dict[str, int]:
        """Open connections by kind: ``worker`` and ``console`` (live pages)."""
        return {"worker": self._workers(), "console": len(self.live.pages)}

    def start(self) -> None:
        """Start the live channel's tasks (on the server's running loop)."""
        self.live.start()

    async def stop(self) -> None:
        """Close the live pages, stop the tasks and the console threads."""
        await self.live.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)

    # ---- dispatch ----------------------------------------------------------------------

    @staticmethod
    def handles(request: Request) -> bool:
        """Whether the site answers ``request`` (see the module doc)."""
        if is_websocket_upgrade(request):
            return urlsplit(request.path).path == LIVE_PATH
        return True

    async def respond(self, connection: ServerConnection, request: Request) -> Response | None:
        """The response to ``request``; None accepts the console's WebSocket."""
        try:
            req = parse_request(request)
        except BadRequest as exc:
            return text_response(f"{exc}\n", HTTPStatus.BAD_REQUEST)
        if is_websocket_upgrade(request):
            return self._check_live(req)
        if req.method != "GET":
            return text_response(
                "the console answers GET only\n",
                HTTPStatus.METHOD_NOT_ALLOWED,
                headers=[("Allow", "GET")],
            )
        top = req.segments[0]
        if top == "static" and len(req.segments) == 2:
            return self._static_file(req.segments[1])
        if req.path == "/health":
            return await self._blocking(self._health, req)
        if req.path == "/metrics":
            if not self.gate.allows(req):
                return self._unauthorized()
            return await self._blocking(self._metrics)
        if not self.gate.host_ok(req):
            return text_response(
                "this console answers only requests addressed to localhost, an IP address or "
                "the host it binds; to reach it by another name, configure an auth token\n",
                HTTPStatus.FORBIDDEN,
            )
        if req.path == "/login":
            return self._render(Page("login.html", {"next": self._next(req)}), req)
        if req.path == "/console/session":
            return self._login(req, connection)
        if req.path == "/logout":
            self.gate.sessions.drop(req.cookies.get("evstate_session"))
            return redirect("/login", [("Set-Cookie", self.gate.clearing_cookie())])
        if top not in _PAGES:
            return self._message(HTTPStatus.NOT_FOUND, "Not found", "There is no such page.", req)
        if not self.gate.allows(req):
            if req.header("X-Evstate-Partial"):
                return json_response({"error": "log in again"}, HTTPStatus.UNAUTHORIZED)
            return redirect(_url("/login", next=req.raw_path))
        return await self._blocking(self._page, req)

    async def _blocking(self, fn: Callable[..., Response], *args: Any) -> Response:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _check_live(self, req: HttpRequest) -> Response | None:
        if not (self.gate.host_ok(req) and self.gate.origin_ok(req)):
            return text_response("cross-origin console connection refused\n", HTTPStatus.FORBIDDEN)
        if not self.gate.allows(req):
            return self._unauthorized()
        return None

    @staticmethod
    def _unauthorized() -> Response:
        return text_response(
            "Unauthorized: send Authorization: Bearer <token>\n",
            HTTPStatus.UNAUTHORIZED,
            headers=[("WWW-Authenticate", 'Bearer realm="evstate"')],
        )

    @staticmethod
    def _next(req: HttpRequest) -> str:
        target = req.query.get("next", "/")
        # Only a path on this server: never "//host" or "http://...", which would send the
        # browser elsewhere after the login (an open redirect).
        return target if target.startswith("/") and not target.startswith("//") else "/"

    def _login(self, req: HttpRequest, connection: ServerConnection) -> Response:
        if not self.gate.required:
            return respond(HTTPStatus.NO_CONTENT, b"", "text/plain")
        if not self.gate.bearer_ok(req):
            self._refused_logins += 1
            if self._refused_logins <= 20 or self._refused_logins % 1000 == 0:
                log.warning(
                    "evstate serve: console login #%d from %s refused: wrong token",
                    self._refused_logins,
                    connection.remote_address,
                )
            return json_response({"error": "wrong token"}, HTTPStatus.UNAUTHORIZED)
        cookie = self.gate.session_cookie(self.gate.sessions.create())
        return respond(HTTPStatus.NO_CONTENT, b"", "text/plain", headers=[("Set-Cookie", cookie)])

    def _static_file(self, name: str) -> Response:
        body = self._static.get(name)
        if body is None:
            return text_response("Not found\n", HTTPStatus.NOT_FOUND)
        content_type = _STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
        return respond(HTTPStatus.OK, body, content_type, cache="public, max-age=300")

    # ---- blocking work (console threads) -----------------------------------------------

    def _health(self, req: HttpRequest) -> Response:
        status, body = health_report(self.store, self.counts.failure, detail=self.gate.allows(req))
        return json_response(body, HTTPStatus(status))

    def _metrics(self) -> Response:
        return respond(HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4")

    def _page(self, req: HttpRequest) -> Response:
        segments = req.segments
        try:
            if segments == [""]:
                page = self.pages.home(req)
            elif segments == ["triggers"]:
                page = self.pages.triggers(req)
            elif segments == ["stats"]:
                page = self.pages.stats(req)
            elif segments[0] == "scopes" and len(segments) == 2:
                page = self.pages.scope(req, segments[1])
            elif segments[0] == "scopes" and len(segments) == 4 and segments[2] == "keys":
                page = self.pages.key(req, segments[1], segments[3])
            else:
                return self._message(HTTPStatus.NOT_FOUND, "Not found", "No such page.", req)
        except BadRequest as exc:
            return self._message(HTTPStatus.BAD_REQUEST, "Bad request", str(exc), req)
        except HistoryCompactedError as exc:
            text = f"{exc.message}. The oldest state that can be shown is revision {exc.horizon}."
            return self._message(HTTPStatus.GONE, "Before the retained history", text, req)
        except InvalidCursorError:
            text = "This page of the listing can no longer be read: list the scope again."
            return self._message(HTTPStatus.GONE, "Listing expired", text, req)
        except ListingCapacityError as exc:
            return self._message(HTTPStatus.SERVICE_UNAVAILABLE, "Busy", exc.message, req)
        except InvalidRequestError as exc:
            return self._message(HTTPStatus.BAD_REQUEST, "Bad request", exc.message, req)
        except (StoreClosedError, StorageError) as exc:
            return self._message(
                HTTPStatus.SERVICE_UNAVAILABLE, "Store unavailable", exc.message, req
            )
        except Error as exc:
            return self._message(HTTPStatus.INTERNAL_SERVER_ERROR, "Error", exc.message, req)
        except Exception:
            log.exception("evstate serve: console page %s failed", req.path)
            text = "The page could not be built; the server log says why."
            return self._message(HTTPStatus.INTERNAL_SERVER_ERROR, "Error", text, req)
        if page.unchanged:
            return respond(HTTPStatus.NO_CONTENT, b"", "text/plain")
        return self._render(page, req)

    def _message(self, status: HTTPStatus, title: str, text: str, req: HttpRequest) -> Response:
        page = Page("message.html", {"title": title, "text": text}, status=status)
        return self._render(page, req)

    def _render(self, page: Page, req: HttpRequest) -> Response:
        context = {
            "moment": None,
            "at": "",
            "nav": req.segments[0],
            "writes": self.writes,
            "auth": self.gate.required,
            "live": page.live,
            "path": req.path,
            **page.context,
        }
        template = self.templates.get_template(page.template)
        if req.header("X-Evstate-Partial") and "live" in template.blocks:
            text = "".join(template.blocks["live"](template.new_context(context)))
        else:
            text = template.render(context)
        return html_response(text, page.status)
