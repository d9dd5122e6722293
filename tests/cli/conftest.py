from __future__ import annotations

from collections.abc import Callable

import pytest
from cli_helpers import Result

from evstate.cli.main import main


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``evstate ARGS`` in this process; SystemExit becomes its status and message."""

    def run(*argv: str) -> Result:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            out, err = capsys.readouterr()
            if isinstance(exc.code, str):
                return Result(1, out, err + exc.code + "\n")
            return Result(int(exc.code or 0), out, err)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
