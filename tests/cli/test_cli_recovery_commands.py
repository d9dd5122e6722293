"""at / restore / verify / stats / snapshot / compact, and the progress bar."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Result, run_process

import evstate
from evstate.cli.common import ProgressBar

Cli = Callable[..., Result]


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    path = tmp_path / "store"
    with evstate.open(path) as store:
        for i in range(1, 11):
            store.set("users", f"u{i % 3}", {"i": i})
        store.set("config", "theme", "dark")
    return str(path)


def test_at_revision_and_time(cli: Cli, store_dir: str) -> None:
    assert cli("at", "--dir", store_dir, "--revision", "4", "users", "u1").json == {"i": 4}
    assert cli("at", "--dir", store_dir, "--revision", "2", "users").json == {
        "u1": {"i": 1},
        "u2": {"i": 2},
    }
    whole = cli("at", "--dir", store_dir, "--revision", "11").json
    assert whole["revision"] == 11 and whole["state"]["config"] == {"theme": "dark"}
    with evstate.open(store_dir) as store:
        stamp = store.history("users", "u1")[1].timestamp / 1000
        expected = store.at(time=stamp).get("users", "u1")
    assert cli("at", "--dir", store_dir, "--time", str(stamp), "users", "u1").json == expected
    assert cli("at", "--dir", store_dir, "--time", "2000-01-01", "users").json == {}


def test_at_needs_a_point(cli: Cli, store_dir: str) -> None:
    result = cli("at", "--dir", store_dir, "users")
    assert result.code == 2 and "one of the arguments --time --revision is required" in result.err


def test_restore_works_while_the_owner_runs(cli: Cli, store_dir: str, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    with evstate.open(store_dir):  # holds the writer lock of the source
        result = cli("restore", store_dir, str(target), "--revision", "5")
    assert result.code == 0, result.err
    assert result.json == {"path": str(target), "revision": 5, "keys": 3}
    with evstate.open(target) as restored:
        assert restored.revision == 5
        assert restored.get("users", "u2") == {"i": 5}
        restored.set("users", "u9", 1)
        assert restored.revision == 6
    again = cli("restore", store_dir, str(target), "--revision", "5")
    assert again.code == 1 and "is not an empty directory" in again.err


def test_verify_healthy_and_damaged(cli: Cli, store_dir: str) -> None:
    result = cli("verify", store_dir)
    assert result.code == 0
    assert result.out.startswith(f"ok: {store_dir} at revision 11: 4 keys")
    segment = next(Path(store_dir).glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[60] ^= 0x01
    segment.write_bytes(bytes(data))
    result = cli("verify", store_dir)
    assert result.code == 1
    assert result.lines and all(line.startswith("problem: ") for line in result.lines)
    assert "checksum" in result.out or "valid data follows" in result.out


def test_verify_reports_a_bad_snapshot(cli: Cli, tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        for i in range(20):
            store.set("s", f"k{i}", i)
        store.snapshot()
        store.set("s", "after", 1)
    snap = next(tmp_path.glob("*.snap"))
    snap.write_bytes(snap.read_bytes()[:-5])
    result = cli("verify", "--dir", str(tmp_path))
    assert result.code == 1
    assert any("bad snapshot" in line for line in result.lines)


def test_stats_snapshot_compact(cli: Cli, tmp_path: Path) -> None:
    d = str(tmp_path)
    with evstate.open(tmp_path, segment_size_bytes=4096) as store:
        for i in range(300):
            store.set("s", f"k{i % 5}", "v" * 50)
    stats = cli("stats", "--dir", d).json
    assert stats["revision"] == 300 and stats["keys"] == 5 and stats["owner_pid"] is None
    assert cli("snapshot", "--dir", d).json == {"revision": 300}
    for i in range(3):
        cli("set", "--dir", d, "s", f"n{i}", "1")
    result = cli("compact", "--dir", d, "--keep-revisions", "2").json
    assert result["snapshot_revision"] == 303
    assert result["base"] == 300 and result["segments_deleted"] > 0
    stats = cli("stats", "--dir", d).json
    # the segment holding revision 301 stays whole (a snapshot does not seal a segment)
    assert stats["oldest_revision"] <= 301 and stats["horizon_revision"] == 300


def test_write_commands_need_the_lock(cli: Cli, store_dir: str) -> None:
    with evstate.open(store_dir):
        for argv in (["snapshot"], ["compact"], ["delete", "s", "k"]):
            result = cli(*argv, "--dir", store_dir)
            assert result.code == 1 and "needs the writer lock" in result.err, argv


def test_progress_bar_draws_on_a_terminal_only() -> None:
    fake = io.StringIO()
    bar = ProgressBar("verifying", stream=fake, enabled=True)
    bar(250_000, 1_000_000)
    line = bar.render()
    assert re.match(r"verifying \[#{7}-{23}\]  25% 250\.0kB/1\.0MB \d+\.\ds$", line), line
    bar.phase("replaying")
    assert re.match(r"replaying [|/\\-] \d+\.\ds$", bar.render())
    with ProgressBar("quiet", stream=io.StringIO()) as piped:
        assert not piped.enabled  # StringIO is not a terminal
    with ProgressBar("slow", stream=fake, enabled=True) as shown:
        shown(1, 2)
        import time

        time.sleep(0.8)
    assert "slow [###" in fake.getvalue() and fake.getvalue().endswith("\r")


def test_piped_commands_print_no_progress(store_dir: str) -> None:
    result = run_process("verify", store_dir, "--dir", store_dir)
    assert result.code == 0 and result.err == ""


def test_compact_says_why_it_reclaimed_nothing(cli: Cli, tmp_path: Path) -> None:
    d = str(tmp_path)
    with evstate.open(tmp_path) as store:
        for i in range(5):
            store.set("s", f"k{i}", i)
    kept = cli("compact", "--dir", d).json
    assert kept["segments_deleted"] == kept["snapshots_deleted"] == 0
    assert kept["reason"] == (
        "the retention policy keeps the last 1000000 revisions, which is all the history "
        "retained (revisions 1 to 5)"
    )
    with evstate.open(tmp_path / "one") as store:
        for i in range(5):
            store.set("s", f"k{i}", i)
    one = cli("compact", "--dir", str(tmp_path / "one"), "--keep-revisions", "1", "--no-snapshot")
    assert one.json["reason"].startswith("all history is in one log segment, the one being written")
    young = cli("compact", "--dir", d, "--keep-revisions", "2").json
    assert young["reason"].startswith("no snapshot is old enough")
    assert "(revision 3)" in young["reason"] and "the newest is of revision 5" in young["reason"]
