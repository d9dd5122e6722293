"""--json on every command that prints data: one JSON document on one line, or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import run_process

import evstate


def test_json_output_parses_for_every_command(tmp_path: Path) -> None:
    d = str(tmp_path / "store")
    with evstate.open(d) as store:
        store.trigger("audit", lambda e: None, start="earliest")
        store.set("users", "u1", {"n": 1})
        store.set("users", "u2", [1, "two"])
        store.wait_for_triggers(timeout=10)
    documents = [
        ["set", "users", "u3", '"three"'],
        ["update", "users", "u1", '[{"type": "increment", "path": "n", "by": 1}]'],
        ["cas", "users", "u3", "--expected", '"three"', '"3"'],
        ["get", "users", "u1"],
        ["list", "users"],
        ["list", "users", "--values"],
        ["groups"],
        ["keys", "users"],
        ["delete", "users", "u2"],
        ["at", "--revision", "2"],
        ["at", "--revision", "2", "users", "u1"],
        ["stats"],
        ["verify"],
        ["triggers"],
        ["triggers", "audit"],
        ["triggers", "audit", "--parked"],
        ["snapshot"],
        ["compact"],
    ]
    for argv in documents:
        result = run_process(*argv, "--dir", d, "--json")
        assert result.code == 0, (argv, result)
        assert result.out.count("\n") == 1, (argv, result.out)  # one document, one line
        json.loads(result.out)
    restored = run_process("restore", d, str(tmp_path / "copy"), "--revision", "2", "--json")
    assert restored.code == 0 and json.loads(restored.out)["revision"] == 2
    for argv in (["log"], ["tail", "-n", "3"], ["history", "users", "u1"]):
        result = run_process(*argv, "--dir", d, "--json")
        assert result.code == 0, (argv, result)
        events = [json.loads(line) for line in result.lines]  # JSON lines: an event a line
        assert events and all(e["message_type"] == "state" for e in events), argv
    verify = run_process("verify", "--dir", d, "--json").json
    assert verify["ok"] is True and verify["problems"] == [] and verify["revision"] == 6
