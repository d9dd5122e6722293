"""The CLI against a real, running ``evstate serve``: EVSTATE_URL / --url, tokens, errors.

Every command runs as a real process; the server is a real process holding ./data.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from cli_helpers import Result, ServeProcess, run_process, wait_until

import evstate

Serve = Callable[..., ServeProcess]


def test_state_commands_go_through_the_server(serve: Serve, tmp_path: Path) -> None:
    server = serve()  # holds tmp_path/data: local writes would fail on the lock
    env = {"EVSTATE_URL": server.url()}

    def run(*argv: str, stdin: str | None = None) -> Result:
        result = run_process(*argv, env=env, cwd=tmp_path, stdin=stdin)
        assert "Traceback" not in result.err, result
        return result

    assert run("set", "users", "u1", '{"name": "Ada"}').json == {
        "old_value": None,
        "new_value": {"name": "Ada"},
    }
    assert run("set", "users", "u0", "-", stdin="[1, 2]").code == 0
    ops = '[{"type": "increment", "path": "logins", "by": 2}]'
    assert run("update", "users", "u1", ops).json["new_value"] == {"name": "Ada", "logins": 2}
    assert run("get", "users", "u1").json == {"name": "Ada", "logins": 2}
    assert run("list", "users").json == {"u0": [1, 2], "u1": {"name": "Ada", "logins": 2}}
    assert sorted(map(str, run("list", "users", "--values").json)) == sorted(
        map(str, [[1, 2], {"name": "Ada", "logins": 2}])
    )
    assert run("groups").json == {"groups": ["users"]}
    assert run("keys", "users").json == {"keys": ["u0", "u1"]}
    missed = run("cas", "users", "u1", "--expected", '{"name": "Bob"}', '{"v": 2}')
    assert missed.code == 2
    assert missed.json == {"swapped": False, "current": {"name": "Ada", "logins": 2}}
    swapped = run("cas", "users", "u1", "--expected", '{"logins": 2, "name": "Ada"}', '{"v": 2}')
    assert swapped.code == 0 and swapped.json == {"swapped": True}
    assert run("cas", "users", "new", "--expected", "null", "1").json == {"swapped": True}
    assert run("delete", "users", "u0").json == [1, 2]
    assert run("set", "tmp", "k", "1", "--ttl", "1h").code == 0
    assert 3_500_000 < run("ttl", "tmp", "k").json <= 3_600_000
    assert run("ttl", "users", "u1").json is None
    # --url works without the environment variable, from any directory
    url_only = run_process("get", "--url", server.url(), "users", "u1", cwd=tmp_path.parent)
    assert url_only.json == {"v": 2}
    assert server.stop() == 0
    with evstate.open(tmp_path / "data") as store:  # the writes were the server's
        assert store.list("users") == {"u1": {"v": 2}, "new": 1}
        assert store.revision == 7 and store.ttl("tmp", "k") is not None


def test_server_errors_are_one_line_with_their_code(serve: Serve, tmp_path: Path) -> None:
    url = serve().url()
    result = run_process("update", "--url", url, "s", "k", '[{"type": "nope"}]')
    assert result.code == 1 and result.out == ""
    assert result.err.startswith(
        "evstate: deserialization_error: Failed to deserialize input for state::update: "
        "unknown variant `nope`"
    )
    assert result.err.count("\n") == 1


def test_a_server_that_is_not_there_is_one_line_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed again: nobody listens there
    url = f"ws://127.0.0.1:{port}"
    for argv in (["get", "s", "k"], ["set", "s", "k", "1"]):
        result = run_process(*argv, env={"EVSTATE_URL": url})
        assert result.code == 1
        assert result.err == (
            f"evstate: cannot connect to {url}: connection refused "
            "(is evstate serve running there?)\n"
        )
    result = run_process("get", "--url", "http://127.0.0.1:1", "s", "k")
    assert result.code == 1 and "bad server URL" in result.err and result.err.count("\n") == 1


def test_the_token_from_the_flag_or_the_environment(serve: Serve, tmp_path: Path) -> None:
    url = serve(env={"EVSTATE_AUTH_TOKEN": "s3cret"}).url()
    refused = run_process("get", "--url", url, "s", "k")
    assert refused.code == 1 and refused.err.count("\n") == 1
    assert "HTTP 401" in refused.err and "--token or EVSTATE_AUTH_TOKEN" in refused.err
    wrong = run_process("get", "--url", url, "--token", "nope", "s", "k")
    assert wrong.code == 1 and "HTTP 401" in wrong.err
    assert run_process("set", "--url", url, "--token", "s3cret", "s", "k", "1").code == 0
    by_env = run_process("get", "s", "k", env={"EVSTATE_URL": url, "EVSTATE_AUTH_TOKEN": "s3cret"})
    assert by_env.code == 0 and by_env.json == 1


def test_a_locked_store_says_how_to_use_the_url(serve: Serve, tmp_path: Path) -> None:
    serve().url()
    for argv in (
        ["set", "users", "u1", "1"],
        ["update", "users", "u1", "[]"],
        ["delete", "users", "u1"],
        ["cas", "users", "u1", "--expected", "null", "1"],
    ):
        result = run_process(*argv, cwd=tmp_path)  # no URL: ./data, held by the server
        assert result.code == 1, argv
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
        assert "open for writing by another process" in result.err
        assert f"EVSTATE_URL=ws://127.0.0.1:49134 evstate {argv[0]} ..." in result.err
        assert "--url" in result.err
    for argv in (["snapshot"], ["compact"]):
        result = run_process(*argv, cwd=tmp_path)
        assert result.code == 1 and "stop that process first" in result.err, argv


def test_log_commands_read_the_directory(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    env = {"EVSTATE_URL": server.url()}
    assert run_process("set", "s", "k", '"v"', env=env).code == 0
    for argv in (["log", "--json"], ["history", "s", "k", "--json"], ["stats", "--json"]):
        result = run_process(*argv, env=env, cwd=tmp_path)  # reads ./data alongside the server
        assert result.code == 0 and result.err == "", (argv, result)
    assert run_process("log", "--json", env=env, cwd=tmp_path).json["key"] == "k"
    elsewhere = run_process("log", env=env, cwd=tmp_path.parent)  # no ./data there
    assert elsewhere.code == 1 and elsewhere.err.count("\n") == 1
    assert elsewhere.err.startswith(f"evstate: no store directory at {tmp_path.parent / 'data'}; ")
    assert "log reads the store's files, not the server" in elsewhere.err


def test_serve_logs_the_store_and_one_line_per_connection(serve: Serve, tmp_path: Path) -> None:
    with evstate.open(tmp_path / "kept") as store:
        store.set("s", "a", 1)
        store.set("s", "b", 2)
    server = serve("--dir", "kept")
    url = server.url()
    wait_until(lambda: len(server.lines) >= 2, what="the startup lines")
    assert any(f"data in {tmp_path / 'kept'}, at revision 2" in line for line in server.lines)
    before = len(server.lines)
    for _ in range(3):
        assert run_process("get", "--url", url, "s", "a").json == 1
    wait_until(lambda: len(server.lines) >= before + 3, what="a line per connection")
    assert server.stop() == 0
    per_connection = [line for line in server.lines[before:] if "shutting down" not in line]
    assert len(per_connection) == 3, server.lines  # one line each, not websockets' two more
    assert not any(
        "connection open" in line or "connection closed" in line for line in server.lines
    )


def test_serve_refuses_bad_ports_and_other_files(tmp_path: Path) -> None:
    for port in ("70000", "-1"):
        result = run_process("serve", "--port", port, cwd=tmp_path)
        assert result.code == 1
        assert result.err == f"evstate: --port must be 1..65535 (or 0: any free port), got {port}\n"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("milk\n")
    result = run_process("serve", "--dir", "notes", "--port", "0", cwd=tmp_path)
    assert result.code == 1 and "holds other files and no evstate store" in result.err
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]
    assert not (tmp_path / "data").exists()
