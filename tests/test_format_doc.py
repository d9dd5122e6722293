"""docs/format.md and the code agree on the byte layout."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from evstate.backends.file.layout import FRAME
from evstate.backends.file.layout import SEGMENT_HEADER as HEADER
from evstate.backends.file.layout import SEGMENT_MAGIC as MAGIC
from evstate.backends.file.layout import SEGMENT_VERSION as VERSION
from evstate.backends.file.segment import encode_header
from evstate.events import EventRecord, encode_record
from evstate.values import encode_value

DOC = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()


def _table(section: str) -> list[tuple[int, int]]:
    body = DOC.split(section, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(\d+|length)\s*\|", body, re.M)
    return [(int(o), 0 if s == "length" else int(s)) for o, s in rows]


def test_header_table_matches_struct() -> None:
    rows = _table("## 1. Segment files")
    assert sum(size for _, size in rows) == HEADER.size
    assert all(a + sa == b for (a, sa), (b, _) in itertools.pairwise(rows))
    assert f"`{MAGIC.decode()}`" in DOC and f"`{VERSION}`" in DOC
    assert len(encode_header(1)) == HEADER.size


def test_frame_table_matches_struct() -> None:
    rows = _table("## 3. Record framing")
    assert rows[-1][0] == FRAME.size


def test_worked_example_bytes() -> None:
    record = EventRecord(7, 1764363600123, 1, "users", "u1", None, encode_value({"n": 1}))
    example = DOC.split("Worked example", 1)[1].split("```", 2)[1]
    tokens = []
    for line in example.strip().splitlines():
        for token in line.split():
            if re.fullmatch(r"[0-9a-f]+", token) and len(token) % 2 == 0:
                tokens.append(token)
            else:
                break
    hex_bytes = "".join(tokens)
    assert bytes.fromhex(hex_bytes) == encode_record(record)
