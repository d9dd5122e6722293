"""FileTimeline.scan goes on where the previous scan stopped (a trigger catching up).

A catch-up reads the log in batches; each batch must start at the frame the previous one
ended in, not at the segment's start (that made catch-up quadratic in the segment size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate.backends.file import index as index_module
from evstate.backends.file import timeline as timeline_module
from evstate.backends.file.segment import HEADER_SIZE


def test_a_scan_resumes_where_the_last_one_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[int] = []
    original = index_module.scan_records

    def recording(path: str, **options: Any) -> Any:
        starts.append(options.get("start", HEADER_SIZE))
        return original(path, **options)

    monkeypatch.setattr(timeline_module, "scan_records", recording)
    with evstate.open(tmp_path / "store", save_interval_ms=3_600_000) as store:
        for i in range(300):
            with store.batch() as batch:  # batch records: several revisions per frame
                batch.set("s", f"a{i}", i)
                batch.set("s", f"b{i}", i)
        timeline = store._timeline
        first = [r.revision for r in timeline.scan(1, 201)]
        second = [r.revision for r in timeline.scan(202, 600)]
        assert first == list(range(1, 202)) and second == list(range(202, 601))
        assert starts[0] == HEADER_SIZE and starts[1] > HEADER_SIZE
        # an unrelated scan starts over, and still answers exactly
        assert [r.revision for r in timeline.scan(5, 9)] == [5, 6, 7, 8, 9]


def test_catch_up_over_a_long_single_segment_delivers_everything(tmp_path: Path) -> None:
    with evstate.open(tmp_path / "store", save_interval_ms=3_600_000) as store:
        for i in range(20_000):
            store.set("s", f"k{i % 500}", i)
        seen: list[int] = []
        store.trigger("late", lambda e: seen.append(e.revision), start="earliest")
        store.wait_for_triggers(timeout=60)
        assert seen == list(range(1, 20_001))
