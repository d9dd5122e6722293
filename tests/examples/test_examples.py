"""Each example of examples/README.md, started by its one command and exercised."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from example_process import EXAMPLES, ROOT, running

import evstate


def poll(fn: object, expected: object, timeout: float = 10) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()  # type: ignore[operator]
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for script in EXAMPLES.glob("*.py"):
        if not script.name.startswith("_"):
            assert f"examples/{script.name}" in readme, script.name


def test_embedded_user_management_demo_runs_twice(tmp_path: Path) -> None:
    for run in (1, 2):
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "user_management.py"), "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        ).stdout
        assert f"total_users={2 * run}" in out, out
        assert "welcome emails sent: " + str(2 * run) in out


def test_user_management_http(tmp_path: Path) -> None:
    with running("user_management_http.py", "--dir", str(tmp_path)) as app:
        status, body = app.request("POST", "/users", {"name": "Alice", "email": "alice@x.org"})
        assert status == 201
        alice = body["id"]
        status, body = app.request("POST", "/users", {"name": "Bob", "email": "bob@y.org"})
        assert status == 201
        status, user = app.request("GET", f"/users/{alice}")
        assert status == 200
        assert user["name"] == "Alice" and user["status"] == "pending" and user["id"] == alice
        assert app.request("GET", "/users/nobody") == (404, {"error": "User not found"})
        assert app.request("POST", "/users", {"name": "x"})[0] == 400
        stats = poll(lambda: app.request("GET", "/analytics/user_stats")[1]["total_users"], 2)
        assert stats == 2
        _, emails = app.request("GET", "/emails")
        assert sorted(e["to"] for e in emails) == ["alice@x.org", "bob@y.org"]
        assert all(e["subject"] == "Welcome!" for e in emails)
        app.wait_for_line("New user created: ")
    with evstate.open(tmp_path) as store:  # the service is gone; its data is not
        assert store.get("analytics", "user_stats")["total_users"] == 2
        assert store.get("analytics", "user_stats")["last_signup"] > 0
        assert len(store.list("users")) == 2


def test_signup_monitor_follows_the_running_service(tmp_path: Path) -> None:
    data, out = tmp_path / "users", tmp_path / "domains.json"
    with running("user_management_http.py", "--dir", str(data)) as app:
        app.request("POST", "/users", {"name": "Early", "email": "early@a.org"})
        with running(
            "signup_monitor.py", "--dir", str(data), "--out", str(out), http=False
        ) as monitor:
            monitor.wait_for_line("following ")
            assert monitor.wait_for_line("signup: early@a.org")
            app.request("POST", "/users", {"name": "Late", "email": "late@b.org"})
            assert monitor.wait_for_line("signup: late@b.org")
        assert json.loads(out.read_text())["domains"] == {"a.org": 1, "b.org": 1}
        assert (data / "followers" / "signup-monitor.cursor").exists()


def sse_events(url: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    assert response.readline() == b": connected\n"  # registered: broadcasts reach us now
    assert response.readline() == b"\n"
    return conn, response


def read_event(response: http.client.HTTPResponse) -> tuple[str, object]:
    name = data = None
    while True:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        elif line == "" and name is not None:
            return name, data


def test_config_management_broadcasts_changes(tmp_path: Path) -> None:
    with running("config_management.py", "--dir", str(tmp_path)) as app:
        assert app.request("GET", "/config/theme") == (200, None)
        conn1, first = sse_events(app.url)
        conn2, second = sse_events(app.url)
        try:
            assert app.request("PUT", "/config/theme", "dark") == (200, {"success": True})
            expected = {"key": "theme", "old_value": None, "value": "dark"}
            assert read_event(first) == ("config_updated", expected)
            assert read_event(second) == ("config_updated", expected)
            app.request("PUT", "/config/theme", {"mode": "light"})
            assert read_event(first) == (
                "config_updated",
                {"key": "theme", "old_value": "dark", "value": {"mode": "light"}},
            )
            assert app.request("GET", "/config/theme") == (200, {"mode": "light"})
        finally:
            conn1.close()
            conn2.close()


def test_caching_with_native_ttl(tmp_path: Path) -> None:
    with running("caching_ttl.py", "--dir", str(tmp_path), "--ttl", "0.6") as app:
        status, first = app.request("GET", "/data/prices")
        assert status == 200 and first["upstream_fetches"] == 1
        assert 0 < first["ttl_ms"] <= 600
        _, again = app.request("GET", "/data/prices")
        assert again["upstream_fetches"] == 1 and again["data"] == first["data"]
        _, cache = app.request("GET", "/cache")
        assert set(cache) == {"prices"}
        # After the TTL the entry is gone, and the store logs its expiry as an event.
        assert poll(lambda: app.request("GET", "/cache")[1], {}) == {}
        app.wait_for_line("expired: prices")
        _, refetched = app.request("GET", "/data/prices")
        assert refetched["upstream_fetches"] == 2


def test_cache_functions_directly(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import caching_ttl
    finally:
        sys.path.remove(str(EXAMPLES))
    calls: list[str] = []

    def fetch(key: str) -> dict[str, str]:
        calls.append(key)
        return {"v": key.upper()}

    with evstate.open(tmp_path) as store:
        assert caching_ttl.get_or_fetch_data(store, "a", fetch, ttl_s=60) == {"v": "A"}
        assert caching_ttl.get_or_fetch_data(store, "a", fetch, ttl_s=60) == {"v": "A"}
        caching_ttl.get_or_fetch_data(store, "b", fetch, ttl_s=0.05)
        time.sleep(0.1)
        assert set(store.list("cache")) == {"a"}  # "b" expired
        caching_ttl.get_or_fetch_data(store, "b", fetch, ttl_s=60)
        assert calls == ["a", "b", "b"]
        store.expire()
        expired = [e for e in store.history("cache", "b") if e.reason == "expired"]
        assert len(expired) == 1 and expired[0].old_value == {"v": "B"}
