#!/usr/bin/env python3
"""Task runner: the README's Quick start commands. Needs only python3.

python3 tools/dev.py run     # create .venv, run the example service (data in ./data)
python3 tools/dev.py test    # create .venv with dev tools, run lint, types and every test
python3 tools/dev.py bench   # create .venv with bench tools, run bench/ and print a table
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def sh(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    child = subprocess.Popen([str(a) for a in args], cwd=ROOT)
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            continue  # Ctrl-C reached the child too: let it shut down cleanly, then exit
    if code:
        sys.exit(code)


def setup(extras: str) -> None:
    """Create .venv and install evstate (editable) with ``extras``, once per change."""
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    pyproject = ROOT / "pyproject.toml"
    if stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime:
        return
    spec = f".[{extras}]" if extras else "."
    sh(PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", spec)
    stamp.touch()


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    rest = argv[1:]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if task == "run":
        setup("")
        sh(PY, "-m", "evstate", "serve", "--config", "config.yaml", *rest)
    elif task == "test":
        setup("dev")
        code = [
            d for d in ("evstate", "tests", "bench", "tools", "examples") if (ROOT / d).is_dir()
        ]
        sh(PY, "-m", "ruff", "check", *code)
        sh(PY, "-m", "ruff", "format", "--check", *code)
        sh(PY, "-m", "mypy", "--strict", "evstate")
        sh(PY, "-m", "pytest", "-q", *rest)
    elif task == "bench":
        setup("dev,bench")
        sh(PY, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", *rest)
    else:
        print(__doc__)
        sys.exit(0 if task == "help" else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
