"""get / set / delete / update / list / groups: JSON in and out; reads need no lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cli_helpers import Result, run_process

import evstate

Cli = Callable[..., Result]


def test_round_trip(cli: Cli, tmp_path: Path) -> None:
    d = str(tmp_path / "store")
    assert cli("set", "--dir", d, "users", "u1", '{"name": "Ada"}').json == {
        "old_value": None,
        "new_value": {"name": "Ada"},
    }
    ops = '[{"type": "increment", "path": "logins", "by": 2}]'
    assert cli("update", "--dir", d, "users", "u1", ops).json["new_value"] == {
        "name": "Ada",
        "logins": 2,
    }
    cli("set", "--dir", d, "users", "u0", "null")
    assert cli("get", "--dir", d, "users", "u1").json == {"name": "Ada", "logins": 2}
    assert cli("list", "--dir", d, "users").json == {"u0": None, "u1": {"name": "Ada", "logins": 2}}
    assert cli("list", "--dir", d, "users", "--values").json == [{"name": "Ada", "logins": 2}, None]
    assert cli("groups", "--dir", d).json == {"groups": ["users"]}
    assert cli("delete", "--dir", d, "users", "u1").json == {"name": "Ada", "logins": 2}
    assert cli("get", "--dir", d, "users", "u1").json is None


def test_value_from_stdin_and_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
        "        config:\n          store_method: file_based\n"
        f"          file_path: {tmp_path / 'cfg'}\n"
    )
    result = run_process("set", "--config", str(config), "s", "k", "-", stdin='{"from": "stdin"}')
    assert result.code == 0, result.err
    assert run_process("get", "--config", str(config), "s", "k").json == {"from": "stdin"}
    assert (tmp_path / "cfg").is_dir()


def test_failed_ops_are_reported_and_strict_exits_2(cli: Cli, tmp_path: Path) -> None:
    d = str(tmp_path)
    cli("set", "--dir", d, "s", "k", '{"n": "text"}')
    result = cli("update", "--dir", d, "s", "k", '[{"type": "increment", "path": "n", "by": 1}]')
    assert result.code == 0 and result.json["errors"][0]["code"] == "increment.not_number"
    strict = cli(
        "update", "--strict", "--dir", d, "s", "k", '[{"type": "increment", "path": "n", "by": 1}]'
    )
    assert strict.code == 2


def test_reads_work_while_another_process_owns_the_store(cli: Cli, tmp_path: Path) -> None:
    with evstate.open(tmp_path) as owner:
        owner.set("s", "k", {"live": True})
        assert cli("get", "--dir", str(tmp_path), "s", "k").json == {"live": True}
        assert cli("groups", "--dir", str(tmp_path)).json == {"groups": ["s"]}
        result = cli("set", "--dir", str(tmp_path), "s", "k", "1")
        assert result.code == 1
        assert result.err.count("\n") == 1
        assert "open for writing by another process" in result.err
        assert "writer lock" in result.err and "Traceback" not in result.err


def test_read_commands_never_create_the_directory(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for argv in (
        ["get", "s", "k"],
        ["list", "s"],
        ["groups"],
        ["log"],
        ["history", "s", "k"],
        ["tail"],
        ["stats"],
        ["at", "--revision", "1"],
        ["verify"],
        ["triggers"],
    ):
        result = cli(*argv, "--dir", str(missing))
        assert result.code == 1, argv
        assert result.err == f"evstate: no store directory at {missing}\n", argv
        assert not missing.exists(), argv


def test_bad_json_is_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("set", "--dir", str(tmp_path), "s", "k", "{nope")
    assert result.code == 1
    assert result.err.startswith("evstate: VALUE is not valid JSON")
    assert result.err.count("\n") == 1


def test_in_memory_config_is_refused(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "mem.yaml"
    config.write_text(
        "modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n"
        "        class: modules::state::adapters::KvStore\n        config:\n"
        "          store_method: in_memory\n"
    )
    result = cli("get", "--config", str(config), "s", "k")
    assert result.code == 1 and "in-memory store" in result.err


def test_bad_config_is_one_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("workers:\n  - name: iii-state\n    config:\n      fsync: sometimes\n")
    result = cli("get", "--config", str(config), "s", "k")
    assert result.code == 1
    assert result.err.startswith("evstate: invalid configuration: ")
    assert result.err.count("\n") == 1


def test_no_tracebacks_from_a_real_process(tmp_path: Path) -> None:
    for argv in (
        ["get", "--dir", str(tmp_path / "nope"), "s", "k"],
        ["set", "--dir", str(tmp_path), "s", "k", "{bad"],
        ["log", "--dir", str(tmp_path), "--since", "last tuesday"],
        ["update", "--dir", str(tmp_path), "s", "k", '[{"type": "nope"}]'],
    ):
        result = run_process(*argv)
        assert result.code == 1, (argv, result.err)
        assert "Traceback" not in result.err
        assert result.err.startswith("evstate: ") and result.err.count("\n") == 1, result.err


def test_keys_cas_and_ttl_on_a_directory(cli: Cli, tmp_path: Path) -> None:
    d = str(tmp_path / "store")
    assert cli("set", "--dir", d, "s", "b", "1", "--ttl", "30s").code == 0
    assert cli("set", "--dir", d, "s", "a", "2").code == 0
    assert cli("keys", "--dir", d, "s").json == {"keys": ["a", "b"]}
    left = cli("ttl", "--dir", d, "s", "b").json
    assert isinstance(left, int) and 25_000 < left <= 30_000
    assert cli("ttl", "--dir", d, "s", "a").json is None
    assert cli("set", "--dir", d, "s", "soon", "3", "--ttl", "300ms").code == 0
    assert cli("get", "--dir", d, "s", "soon").json == 3
    time.sleep(0.5)
    assert cli("get", "--dir", d, "s", "soon").json is None
    missed = cli("cas", "--dir", d, "s", "a", "--expected", "1", "5")
    assert missed.code == 2 and missed.json == {"swapped": False, "current": 2}
    assert cli("cas", "--dir", d, "s", "a", "--expected", "2", "5", "--ttl", "1h").code == 0
    assert 3_500_000 < cli("ttl", "--dir", d, "s", "a").json <= 3_600_000
    bad = cli("set", "--dir", d, "s", "k", "1", "--ttl", "soon")
    assert bad.code == 1
    assert bad.err == (
        "evstate: bad duration 'soon': use a positive whole number with a unit: "
        "500ms, 30s, 5m, 2h, 1d\n"
    )
