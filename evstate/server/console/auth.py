"""Who may use the console, ``/metrics`` and the other HTTP endpoints.

With an auth token configured (``server_auth_token`` or ``$EVSTATE_AUTH_TOKEN``), a request
must carry it, either

- as ``Authorization: Bearer <token>`` (tools: curl, Prometheus), or
- as the ``evstate_session`` cookie of a browser session: the login page's script sends
  the token once, in that header, to ``/console/session``, which answers with a cookie
  holding a random session id (HttpOnly, so page scripts never see it; SameSite=Strict, so
  other sites cannot make the browser send it). The token itself is never stored in the
  browser. Sessions live in this process's memory: a restart logs everyone out.

Without a token, everyone who can reach the port may use the console (as with workers); the
server then accepts only a ``Host`` that names an IP address, ``localhost`` or the host it
was told to bind, which stops a web page on another site from reaching it through a DNS
name pointed at this machine (DNS rebinding).

The console's WebSocket (``/console/live``) carries live updates and, with writes allowed,
changes: a browser page of another origin must not open it with the user's cookie, so its
``Origin`` must be this server's own (:meth:`Gate.origin_ok`).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from evstate.server.console.http import HttpRequest

__all__ = ["SESSION_COOKIE", "SESSION_SECONDS", "Gate", "Sessions"]

SESSION_COOKIE = "evstate_session"
SESSION_SECONDS = 12 * 3600
"""A session ends after this long without a request."""

_MAX_SESSIONS = 1024  # the oldest are dropped beyond this (a login flood cannot grow memory)


class Sessions:
    """Browser sessions: random ids with an idle deadline (thread-safe)."""

    def __init__(self, idle_seconds: float = SESSION_SECONDS) -> None:
        self._idle = idle_seconds
        self._lock = threading.Lock()
        self._deadlines: OrderedDict[str, float] = OrderedDict()

    def create(self) -> str:
        """A new session id (256 random bits, URL-safe)."""
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._deadlines[session] = time.monotonic() + self._idle
            while len(self._deadlines) > _MAX_SESSIONS:
                self._deadlines.popitem(last=False)
        return session

    def check(self, session: str | None) -> bool:
        """Whether ``session`` is live; a live one gets a new idle deadline."""
        if not session:
            return False
        now = time.monotonic()
        with self._lock:
            deadline = self._deadlines.get(session)
            if deadline is None:
                return False
            if deadline < now:
                del self._deadlines[session]
                return False
            self._deadlines[session] = now + self._idle
            self._deadlines.move_to_end(session)
            return True

    def drop(self, session: str | None) -> None:
        """End ``session`` (logout)."""
        if session:
            with self._lock:
                self._deadlines.pop(session, None)


class Gate:
    """The access rules of the module doc for one server."""

    def __init__(self, token: str | None, bind_host: str) -> None:
        self.token = token
        self.sessions = Sessions()
        self._bind_host = bind_host.strip("[]").lower()

    @property
    def required(self) -> bool:
        """Whether requests must prove they know the token."""
        return self.token is not None

    def bearer_ok(self, request: HttpRequest) -> bool:
        """Whether the request carries ``Authorization: Bearer <token>`` (exactly once)."""
        if self.token is None:
            return False
        given = request.header("Authorization") or ""
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected)

    def allows(self, request: HttpRequest) -> bool:
        """Whether the request may see the console, ``/metrics`` and the health details."""
        if self.token is None:
            return True
        return self.bearer_ok(request) or self.sessions.check(request.cookies.get(SESSION_COOKIE))

    def host_ok(self, request: HttpRequest) -> bool:
        """Whether the ``Host`` header is acceptable (see the module doc)."""
        if self.token is not None:
            return True
        host = request.header("Host")
        if host is None:
            return False
        name = urlsplit(f"//{host}").hostname or ""
        if name in ("localhost", self._bind_host) or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    @staticmethod
    def origin_ok(request: HttpRequest) -> bool:
        """Whether a WebSocket request comes from this server's own pages.

        Browsers always send ``Origin``; it must name the host (and port) the request was
        sent to. A client that sends no ``Origin`` is not a browser page, so no other site
        can be acting through it; it still needs the token when one is configured.
        """
        origin = request.header("Origin")
        if origin is None:
            return not request.headers.get_all("Origin")
        host = request.header("Host")
        parts = urlsplit(origin)
        return host is not None and parts.scheme in ("http", "https") and parts.netloc == host

    def session_cookie(self, session: str) -> str:
        """The ``Set-Cookie`` value that gives the browser ``session``."""
        return (
            f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={SESSION_SECONDS}"
        )

    @staticmethod
    def clearing_cookie() -> str:
        """The ``Set-Cookie`` value that removes the session cookie."""
        return f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
