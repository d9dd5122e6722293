"""Helpers of the CLI tests: run evstate in-process or as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def run_process(*argv: str, stdin: str | None = None, timeout: float = 60) -> Result:
    """Run ``python -m evstate ARGS`` as a real process (stderr not a terminal)."""
    proc = subprocess.run(
        [sys.executable, "-m", "evstate", *argv],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
