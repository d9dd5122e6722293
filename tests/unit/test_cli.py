from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evstate.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_set_get_update_list_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert run(capsys, "set", "--dir", d, "users", "u1", '{"n": 1}')[1] == {
        "old_value": None,
        "new_value": {"n": 1},
    }
    assert run(capsys, "get", "--dir", d, "users", "u1")[1] == {"n": 1}
    ops = '[{"type": "increment", "path": "n", "by": 2}]'
    assert run(capsys, "update", "--dir", d, "users", "u1", ops)[1]["new_value"] == {"n": 3}
    assert run(capsys, "list", "--dir", d, "users")[1] == {"u1": {"n": 3}}
    assert run(capsys, "groups", "--dir", d)[1] == {"groups": ["users"]}
    assert run(capsys, "delete", "--dir", d, "users", "u1")[1] == {"n": 3}


def test_bad_json_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["set", "--dir", str(tmp_path), "s", "k", "{nope"])
    assert "not valid JSON" in str(info.value.code)


def test_library_errors_exit_1_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "update", "--dir", str(tmp_path), "s", "k", '[{"type": "nope"}]')
    assert code == 1
    assert err.startswith("evstate: unknown variant `nope`")
    assert "Traceback" not in err


def test_console_script_runs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "evstate", "set", "--dir", str(tmp_path), "s", "k", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "evstate", "get", "--dir", str(tmp_path), "s", "missing"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) is None
