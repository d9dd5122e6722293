"""The README's iii SDK worker example, run as it is written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.server.harness import Served

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_worker() -> str:
    """The first Python block of the README's "iii SDK workers" section."""
    section = README.read_text().split("## iii SDK workers", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_worker_runs(server: Served) -> None:
    code = readme_worker()
    assert "register_trigger" not in code  # deprecated by iii-sdk 0.25
    assert "ws://127.0.0.1:49134" in code
    env = {**os.environ, "OTEL_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-c", code.replace("ws://127.0.0.1:49134", server.url)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "{'old_value': None, 'new_value': {'status': 'new'}}",
        "{'changes': 1}",
    ]
    assert server.store.get("audit", "o-1") == {"changes": 1}
