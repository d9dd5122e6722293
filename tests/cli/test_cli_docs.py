"""docs/cli.md is generated from --help (tools/gen_cli_docs.py) and must not be stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    expected = generator().render()
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == expected, "docs/cli.md is stale: run .venv/bin/python tools/gen_cli_docs.py"


def test_every_command_is_documented_with_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    from evstate.cli.main import build_parser

    gen = generator()
    sub, names = gen._subcommands(build_parser())
    text = (ROOT / "docs" / "cli.md").read_text()
    summaries = {a.dest: a.help for a in sub._choices_actions}
    for name in names:
        assert summaries.get(name), f"{name} has no help summary"
        assert f"\n## evstate {name}\n" in text, name
    expected = {"get", "set", "delete", "update", "list", "groups", "keys", "ttl", "cas"}
    expected |= {"log", "tail", "history"}
    expected |= {"at", "restore", "verify", "snapshot", "compact", "stats", "triggers", "serve"}
    assert expected <= set(names)
