"""Mistakes a user makes: no phantom stores, "did you mean", bare words as values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Result, run_process

import evstate

Cli = Callable[..., Result]


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    with evstate.open(tmp_path / "store") as store:
        store.set("users", "u1", {"n": 1})
        store.set("config", "theme", "dark")
    return str(tmp_path / "store")


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_writes_never_create_a_store_among_other_files(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("not a store\n")
    for argv in (
        ["set", "s", "k", "1"],
        ["update", "s", "k", "[]"],
        ["delete", "s", "k"],
        ["cas", "s", "k", "--expected", "null", "1"],
    ):
        result = cli(*argv, "--dir", str(home))
        assert result.code == 1, argv
        assert result.err == (
            f"evstate: {home} holds other files and no evstate store; a store is created only "
            "in a new or empty directory: give --dir one\n"
        )
    assert _files(home) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("set", "--dir", str(empty), "s", "k", "1").code == 0  # empty: fine
    assert cli("set", "--dir", str(tmp_path / "new" / "store"), "s", "k", "1").code == 0


def test_reads_of_a_directory_that_is_no_store_fail(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for name, what in (("other", "no log segments or snapshots in it"), ("empty", "it is empty")):
        for argv in (["get", "s", "k"], ["log"], ["stats"], ["verify"], ["triggers"]):
            result = cli(*argv, "--dir", str(tmp_path / name))
            assert result.code == 1, argv
            assert result.err == f"evstate: {tmp_path / name} is not an evstate store ({what})\n"
        result = cli("restore", str(tmp_path / name), str(tmp_path / "copy"), "--revision", "1")
        assert result.code == 1 and "is not an evstate store" in result.err
    assert _files(tmp_path) == ["empty", "other", "other/a.txt"]


def test_upkeep_of_a_missing_store_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    (tmp_path / "empty").mkdir()
    for argv in (
        ["snapshot"],
        ["compact"],
        ["triggers", "t", "--replay-from", "1"],
        ["triggers", "t", "--drop-parked"],
    ):
        result = cli(*argv, "--dir", str(missing))
        assert result.code == 1 and result.err == f"evstate: no store directory at {missing}\n"
        result = cli(*argv, "--dir", str(tmp_path / "empty"))
        assert result.code == 1 and "is not an evstate store (it is empty)" in result.err
    assert _files(tmp_path) == ["empty"]


def test_a_malformed_write_creates_no_store(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert cli("set", "--dir", str(target), "s", "k", "{bad").code == 1
    result = cli("update", "--dir", str(target), "s", "k", '[{"type": "nope"}]')
    assert result.code == 1 and result.err.startswith("evstate: unknown variant `nope`")
    assert not target.exists()


def test_a_typo_in_a_scope_gets_a_hint(cli: Cli, store_dir: str) -> None:
    hint = "evstate: no scope 'userz'; did you mean 'users'?\n"
    for argv, printed in (
        (["get", "userz", "u1"], "null\n"),
        (["list", "userz"], "{}\n"),
        (["keys", "userz", "--json"], '{"keys": []}\n'),
        (["history", "userz", "u1", "--json"], ""),
        (["at", "--revision", "2", "userz"], "{}\n"),
        (["log", "--scope", "userz"], None),
    ):
        result = cli(*argv, "--dir", store_dir)
        assert result.code == 0, argv
        assert result.err == hint, argv
        if printed is not None:
            assert result.out == printed, argv
    quiet = cli("get", "--dir", store_dir, "zzzzzz", "k")  # nothing similar: no hint
    assert quiet.code == 0 and quiet.err == ""
    assert cli("get", "--dir", store_dir, "users", "nope").err == ""  # the scope exists


def test_a_bare_word_as_a_value_hints_to_quote_it(tmp_path: Path) -> None:
    result = run_process("set", "--dir", str(tmp_path / "s"), "s", "k", "hello")
    assert result.code == 1
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert result.err.startswith("evstate: VALUE is not valid JSON: ")
    assert result.err.endswith("to give the string 'hello', quote it as JSON: '\"hello\"'\n")
    cas = run_process("cas", "--dir", str(tmp_path / "s"), "s", "k", "--expected", "old", "1")
    assert "--expected is not valid JSON" in cas.err and "'\"old\"'" in cas.err
    assert not (tmp_path / "s").exists()
    nan = run_process("set", "--dir", str(tmp_path / "s"), "s", "k", "NaN")
    assert nan.code == 1 and "NaN is not JSON" in nan.err
