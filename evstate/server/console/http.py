"""The HTTP side of the console: reading a request, building a response.

``websockets`` parses every request the server receives (only requests without a body, so
in practice ``GET``) and lets the server answer it with a :class:`Response` instead of a
WebSocket handshake (its ``process_request`` hook). This module turns its ``Request`` into a
:class:`HttpRequest` (path segments percent-decoded, query, cookies) and builds the
responses, each with the headers every console answer carries: no caching of data, a
Content-Security-Policy that allows only this origin's scripts and styles (so a value that
smuggles markup past the templates' escaping still cannot run script), no framing, no
MIME sniffing, no referrer.
"""

from __future__ import annotations

import email.utils
import json
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "BadRequest",
    "HttpRequest",
    "html_response",
    "is_websocket_upgrade",
    "json_response",
    "parse_request",
    "quote_segment",
    "redirect",
    "respond",
    "text_response",
]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class BadRequest(Exception):
    """The request cannot be read (answered with HTTP 400 and this message)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request, decoded.

    ``segments`` are the path's segments, percent-decoded as UTF-8 (``/scopes/a%2Fb`` is
    ``["scopes", "a/b"]``, ``/`` is ``[""]``); ``query`` maps each parameter to its last
    value; ``raw_path`` is the path and query as sent.
    """

    method: str
    raw_path: str
    path: str
    segments: list[str]
    query: dict[str, str]
    headers: Headers
    cookies: dict[str, str]

    def header(self, name: str) -> str | None:
        """The header ``name`` when sent exactly once, else None."""
        values = self.headers.get_all(name)
        return values[0] if len(values) == 1 else None


def is_websocket_upgrade(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket (``Upgrade: websocket``)."""
    return any(v.strip().lower() == "websocket" for v in request.headers.get_all("Upgrade"))


def _decode(text: str) -> str:
    try:
        return unquote(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the address is not valid UTF-8") from None


def parse_request(request: Request) -> HttpRequest:
    """Decode ``request``.

    Raises:
        BadRequest: the path or query is not percent-encoded UTF-8.
    """
    parts = urlsplit(request.path)
    raw_segments = parts.path.split("/")[1:] or [""]
    segments = [_decode(s) for s in raw_segments]
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the query is not valid UTF-8") from None
    cookies: dict[str, str] = {}
    for header in request.headers.get_all("Cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue  # a malformed cookie header: as if none was sent
        cookies.update({name: morsel.value for name, morsel in jar.items()})
    return HttpRequest(
        method=request.method,
        raw_path=request.path,
        path=parts.path,
        segments=segments,
        query=dict(pairs),
        headers=request.headers,
        cookies=cookies,
    )


def quote_segment(text: str) -> str:
    """``text`` percent-encoded as one path segment (``/`` included)."""
    return quote(text, safe="")


def respond(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    cache: str = "no-store",
) -> Response:
    """A complete response: the body, its type, and the headers every answer carries."""
    fields = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", cache),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ]
    fields.extend(headers or [])
    return Response(status.value, status.phrase, Headers(fields), body)


def html_response(
    text: str, status: HTTPStatus = HTTPStatus.OK, headers: list[tuple[str, str]] | None = None
) -> Response:
    """An HTML page."""
    return respond(status, text.encode(), "text/html; charset=utf-8", headers=headers)


def json_response(
    data: Any, status: HTTPStatus = HTTPStatus.OK, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON document."""
    body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
    return respond(status, body, "application/json", headers=headers)


def text_response(
    text: str,
    status: HTTPStatus = HTTPStatus.OK,
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """A plain text answer (or another text type)."""
    return respond(status, text.encode(), content_type, headers=headers)


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """A 303 to ``location`` (a path on this server)."""
    return respond(
        HTTPStatus.SEE_OTHER,
        b"",
        "text/plain; charset=utf-8",
        headers=[("Location", location), *(headers or [])],
    )
