"""The HTTP side of evstate serve without a browser: routes, auth, /health, the live socket.

Raw HTTP requests with ``http.client`` (headers exactly as given), WebSocket clients with
``websockets``; every server is on loopback and every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import evstate
from evstate.cli.serve import startup_lines
from evstate.config import Config
from evstate.testing import FaultyIO
from tests.cli.cli_helpers import ServeProcess
from tests.console.conftest import Console
from tests.server.harness import WAIT, Raw, wait_until

Response = tuple[int, http.client.HTTPMessage, bytes]


def get(
    console: Console, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Response:
    host, port = console.base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        conn.close()


def live(console: Console, **options: Any) -> Any:
    return connect(console.ws_url + "/console/live", open_timeout=WAIT, **options)


def test_console_url_is_the_websocket_address_logged_once_by_the_cli(
    make_console: Callable[..., Console], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    console = make_console()
    server = console.background.server
    assert server.console_url == server.url.replace("ws://", "http://") + "/"
    lines = startup_lines("memory", console.store, server)
    assert [line for line in lines if "console" in line] == [
        f"evstate serve: console: {server.console_url}"
    ]
    assert not [r for r in caplog.records if "console:" in r.getMessage()]  # the CLI's line only


def test_pages_and_worker_paths_share_the_port(make_console: Callable[..., Console]) -> None:
    console = make_console()
    status, headers, body = get(console, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<h1>Scopes</h1>" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    client = Raw(console.ws_url)  # a worker on "/" as before
    assert client.call("state::set", {"scope": "s", "key": "k", "value": 1})["result"]
    client.close()
    with pytest.raises(InvalidStatus) as info:
        connect(console.ws_url + "/ws/elsewhere", open_timeout=WAIT).close()
    assert info.value.response.status_code == 404
    assert get(console, "/nope")[0] == 404
    assert get(console, "/", method="DELETE")[0] == 405
    status, headers, body = get(console, "/static/console.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert get(console, "/static/../app.py")[0] == 404


def test_health(make_console: Callable[..., Console]) -> None:
    console = make_console()
    console.store.set("s", "k", 1)
    status, headers, body = get(console, "/health")
    report = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert report == {
        "status": "ok",
        "revision": 1,
        "durable_revision": 1,
        "keys": 1,
        "store": "in_memory",
    }
    console.store.close()
    status, _, body = get(console, "/health")
    assert status == 503 and json.loads(body) == {
        "status": "failed",
        "reason": "the store is closed",
    }


def test_health_fails_closed_after_a_failed_fsync(
    make_console: Callable[..., Console], tmp_path: Path
) -> None:
    io = FaultyIO()
    store = evstate.Store(Config().replace(file_path=str(tmp_path / "store")), io=io)
    console = make_console(store)
    client = Raw(console.ws_url)
    assert client.call("state::set", {"scope": "s", "key": "k", "value": 1})["result"]
    assert get(console, "/health")[0] == 200
    io.fail_at("before_fsync", kind="segment")
    answer = client.call("state::set", {"scope": "s", "key": "k", "value": 2})
    assert "error" in answer
    client.close()
    status, _, body = get(console, "/health")
    report = json.loads(body)
    assert status == 503 and report["status"] == "failed"
    assert "read-only" in report["reason"]
    assert "evstate_store_failed 1.0" in get(console, "/metrics")[2].decode()


def test_health_sees_a_failed_background_fsync_that_no_call_saw(
    make_console: Callable[..., Console], tmp_path: Path
) -> None:
    """fsync=interval: the syncer thread's fsync fails; /health says so before any call."""
    io = FaultyIO()
    config = Config().replace(
        file_path=str(tmp_path / "store"), fsync="interval", fsync_interval_ms=10
    )
    store = evstate.Store(config, io=io)
    console = make_console(store)
    assert get(console, "/health")[0] == 200 and store.failure is None
    io.fail_at("before_fsync", kind="segment")
    store.set("s", "k", 1)  # acknowledged before its fsync (fsync=interval)
    wait_until(lambda: store.failure is not None, what="the syncer's failed fsync")
    status, _, body = get(console, "/health")
    report = json.loads(body)
    assert status == 503 and report["status"] == "failed"
    assert report["reason"] == store.failure and "read-only" in report["reason"]
    assert "evstate_store_failed 1.0" in get(console, "/metrics")[2].decode()
    with pytest.raises(evstate.StoreFailedError, match="read-only"):
        store.set("s", "k", 2)
    assert store.get("s", "k") == 1  # reads keep working


def test_with_a_token_everything_but_health_and_static_needs_it(
    make_console: Callable[..., Console],
) -> None:
    console = make_console(token="t0ken")
    bearer = {"Authorization": "Bearer t0ken"}
    status, headers, _ = get(console, "/scopes/users?q=a")
    assert status == 303 and headers["Location"] == "/login?next=%2Fscopes%2Fusers%3Fq%3Da"
    assert get(console, "/", bearer)[0] == 200
    assert get(console, "/metrics")[0] == 401
    assert get(console, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(console, "/metrics", bearer)[0] == 200
    assert json.loads(get(console, "/health")[2]) == {"status": "ok"}  # nothing more
    assert json.loads(get(console, "/health", bearer)[2])["revision"] == 0
    assert get(console, "/static/console.css")[0] == 200
    assert get(console, "/login")[0] == 200
    # The login: the token in a header, a session id in an HttpOnly cookie.
    assert get(console, "/console/session", {"Authorization": "Bearer nope"})[0] == 401
    status, headers, _ = get(console, "/console/session", bearer)
    cookie = headers["Set-Cookie"]
    assert status == 204 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "t0ken" not in cookie
    session = {"Cookie": cookie.split(";")[0]}
    assert get(console, "/metrics", session)[0] == 200
    assert get(console, "/triggers", session)[0] == 200
    with live(console, additional_headers=session) as ws:
        assert json.loads(ws.recv(WAIT))["type"] == "hello"
    get(console, "/logout", session)
    assert get(console, "/triggers", session)[0] == 303
    with pytest.raises(InvalidStatus) as info:
        live(console, additional_headers=session)
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(console.ws_url, open_timeout=WAIT).close()  # workers: unchanged (401)


def test_login_only_returns_to_this_server(make_console: Callable[..., Console]) -> None:
    console = make_console(token="t0ken")
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)"):
        body = get(console, "/login?next=" + target)[2].decode()
        assert 'data-next="/"' in body


def test_live_socket_refuses_other_origins(make_console: Callable[..., Console]) -> None:
    console = make_console()
    host = console.base.removeprefix("http://")
    with pytest.raises(InvalidStatus) as info:
        live(console, origin="http://evil.example")
    assert info.value.response.status_code == 403
    with live(console, origin=f"http://{host}") as ws:
        hello = json.loads(ws.recv(WAIT))
        assert hello == {"type": "hello", "revision": 0, "writes": False}
        console.store.set("s", "k", 1)
        while True:  # samples come once a second, the revision within 0.2 s of the write
            message = json.loads(ws.recv(WAIT))
            if message["type"] == "revision":
                assert message == {"type": "revision", "revision": 1}
                break
            assert message["type"] == "sample"


def test_names_other_than_ip_or_localhost_are_refused_without_a_token(
    make_console: Callable[..., Console],
) -> None:
    console = make_console()
    port = console.base.rsplit(":", 1)[1]
    assert get(console, "/", {"Host": f"localhost:{port}"})[0] == 200
    assert get(console, "/", {"Host": f"[::1]:{port}"})[0] == 200
    assert get(console, "/", {"Host": f"attacker.example:{port}"})[0] == 403  # DNS rebinding
    assert get(console, "/health", {"Host": f"attacker.example:{port}"})[0] == 200
    token_console = make_console(token="t0ken")
    bearer = {"Host": "evstate.internal", "Authorization": "Bearer t0ken"}
    assert get(token_console, "/", bearer)[0] == 200


def test_bad_requests_are_readable_errors(make_console: Callable[..., Console]) -> None:
    console = make_console()
    for i in range(150):
        console.store.set("s", f"k{i:03d}", i)
    assert get(console, "/?at=tomorrow")[0] == 400
    assert get(console, "/scopes/%ff")[0] == 400  # not UTF-8
    assert get(console, "/scopes/s?cursor=forged")[0] == 410
    assert get(console, "/scopes/s/keys/k001?older=x")[0] == 400
    status = get(console, "/scopes/s/keys/k001?at=999")[0]  # the future: the present
    assert status == 200


def _action(ws: Any, action: str, **fields: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "action", "id": 7, "action": action, **fields}))
    while True:
        message = json.loads(ws.recv(WAIT))
        if message["type"] == "reply":
            assert message["id"] == 7
            return dict(message)


def test_actions_change_data_only_when_allowed(make_console: Callable[..., Console]) -> None:
    read_only = make_console()
    read_only.store.set("s", "k", 1)
    with live(read_only) as ws:
        answer = _action(ws, "delete", scope="s", key="k")
    assert answer["error"]["code"] == "console_read_only" and read_only.store.get("s", "k") == 1
    console = make_console(writes=True)
    store = console.store
    with live(console) as ws:
        assert _action(ws, "save", scope="s", key="k", value='{"a": 1}', create=True)["ok"]
        again = _action(ws, "save", scope="s", key="k", value="2", create=True)
        assert again["error"]["code"] == "key_exists"
        assert _action(ws, "save", scope="s", key="k", value="[2]", expected='{"a": 1}')["ok"]
        stale = _action(ws, "save", scope="s", key="k", value="3", expected='{"a": 1}')
        assert stale["error"]["code"] == "changed_meanwhile" and store.get("s", "k") == [2]
        bad = _action(ws, "save", scope="s", key="k", value="{nope", expected="[2]")
        assert bad["error"]["code"] == "invalid_json"
        nan = _action(ws, "save", scope="s", key="k", value="NaN", expected="[2]")
        assert nan["error"]["code"] == "invalid_json"
        ttl = _action(ws, "save", scope="s", key="t", value="1", create=True, ttl_ms=60_000)
        assert ttl["ok"] and 0 < (store.ttl("s", "t") or 0) <= 60_000
        assert _action(ws, "delete", scope="s", key="k")["result"] == {"deleted": True}
        assert store.get("s", "k") is None
        assert _action(ws, "frobnicate")["error"]["code"] == "invalid_action"
        huge = _action(ws, "save", scope="s", key="k", value='"x"', create=True, ttl_ms=-1)
        assert huge["error"]["code"] == "invalid_action"
    calls = json.loads(json.dumps(console.background.server.counts.read()))
    assert calls[0]["compare_and_set"] >= 4 and calls[0]["delete"] == 1


def test_evstate_serve_logs_the_console_once_and_takes_console_writes(tmp_path: Path) -> None:
    process = ServeProcess("--dir", "data", "--port", "0", "--console-writes", cwd=tmp_path)
    try:
        ws_url = process.url()
        line = wait_until(
            lambda: next((line for line in process.lines if " console: " in line), None),
            what="the console line",
        )
        address = ws_url.replace("ws://", "http://") + "/"
        assert line.endswith(f"evstate serve: console: {address}")
        with urllib.request.urlopen(address, timeout=WAIT) as answer:
            assert "writes on" in answer.read().decode()
    finally:
        assert process.stop() == 0
    assert sum(" console: " in line for line in process.lines) == 1


def test_live_refresh_sends_only_the_live_part_and_nothing_when_unchanged(
    make_console: Callable[..., Console],
) -> None:
    console = make_console()
    store = console.store
    store.set("s", "k", 1)
    store.set("s", "k", 2)
    partial = {"X-Evstate-Partial": "1", "X-Evstate-Known": "2"}
    store.set("s", "other", 0)  # the store moved, the key did not
    assert get(console, "/scopes/s/keys/k", partial)[0] == 204
    store.set("s", "k", 3)
    status, _, body = get(console, "/scopes/s/keys/k", partial)
    text = body.decode()
    assert status == 200 and "<html" not in text and 'data-known="4"' in text
    assert text.lstrip().startswith('<section class="live-body"')
    status, _, body = get(console, "/", {"X-Evstate-Partial": "1"})
    assert status == 200 and "<html" not in body.decode() and 'id="scopes"' in body.decode()
