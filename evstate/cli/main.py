"""The ``evstate`` command line: thin over the library, JSON in and out.

One module per command group: :mod:`evstate.cli.state` (get, list, groups, keys, ttl,
set, update, delete, cas), :mod:`evstate.cli.audit` (log, tail, history),
:mod:`evstate.cli.recovery` (at, restore, verify, stats), :mod:`evstate.cli.upkeep`
(snapshot, compact), :mod:`evstate.cli.triggers` (triggers) and :mod:`evstate.cli.serve`
(serve). Shared plumbing: :mod:`evstate.cli.target` (which store: a directory, Redis, a
running server), :mod:`evstate.cli.remote` (the client of a running server),
:mod:`evstate.cli.hints` and :mod:`evstate.cli.common`. Every command sets ``handler``
and returns its exit status.

Exit status: 0 success; 1 an error (one line on stderr, ``evstate: ...``, never a traceback
for a mistake a user can make: missing directory, locked store, bad JSON, bad time, history
compacted away); 2 a usage error (argparse) or, where documented, a partial failure.
"""

from __future__ import annotations

import argparse
import os
import sys

import evstate
from evstate.cli.common import UsageError
from evstate.errors import ConfigError, Error

__all__ = [
    "EPILOG",
    "build_parser",
    "main",
]

EPILOG = """\
While evstate serve owns the store, send the state commands (get, list, groups, keys, ttl,
set, update, delete, cas) through it: EVSTATE_URL=ws://127.0.0.1:49134 evstate set ... (or
--url; --token or EVSTATE_AUTH_TOKEN when it needs one). Without a URL they work on the
directory: reads without a lock, writes with the writer lock. log, tail, history, at,
restore, verify, stats and triggers read the directory's files without a lock, alongside
the server. A config naming the redis adapter is obeyed by every command. Full
reference: docs/cli.md.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md)."""
    from evstate.cli import audit, recovery, serve, state, triggers, upkeep

    parser = argparse.ArgumentParser(
        prog="evstate",
        description="evstate: an event-sourced state store (the iii engine's State module).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"evstate {evstate.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(sub)
    state.register(sub)
    audit.register(sub)
    recovery.register(sub)
    upkeep.register(sub)
    triggers.register(sub)
    return parser


def _one_line(exc: Error) -> str:
    if isinstance(exc, ConfigError):
        return "invalid configuration: " + "; ".join(exc.problems)
    lines = [line.strip() for line in (exc.message or str(exc)).splitlines() if line.strip()]
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evstate`` console script; returns the exit status.

    Raises:
        SystemExit: usage errors (argparse, status 2) and unreadable input such as bad JSON
            or a bad time (one line, status 1).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        raise SystemExit(f"evstate: {exc}") from None
    except Error as exc:
        print(f"evstate: {_one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``evstate log | head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"evstate: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
