"""Shared plumbing of the ``evstate`` command line: JSON in and out, times, progress.

Conventions every command follows (docs/cli.md):

- Which store a command works on (a directory, a Redis config, a running server) is
  :mod:`evstate.cli.target`'s business.
- A mistake the user can fix (bad JSON, a bad time, a missing directory, a locked store)
  ends with one line on stderr and a non-zero exit status, never a traceback.
- Data goes to stdout as JSON: indented by default, one line with ``--json`` (JSON lines,
  one event a line, for the event listings).
- Long work draws a one-line progress bar on stderr when stderr is a terminal, and nothing
  when it is piped or redirected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from evstate.config_schema import parse_duration_ms as duration_ms

__all__ = [
    "ProgressBar",
    "UsageError",
    "add_json_option",
    "format_ms",
    "parse_duration",
    "parse_json",
    "parse_revision",
    "parse_time",
    "print_json",
    "warn",
]


class UsageError(Exception):
    """A mistake in what the user typed; ``main`` prints it as one line and exits 1."""


def warn(message: str) -> None:
    """Print ``evstate: message`` on stderr (a note or a hint; stdout stays data only)."""
    print(f"evstate: {message}", file=sys.stderr, flush=True)


# ---- input ------------------------------------------------------------------------------------

_BARE_WORDS = re.compile(r"[^\"{}\[\]]+")  # text without JSON's quotes and brackets


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON (``-`` reads stdin); NaN and Infinity are refused, as on the wire.

    Raises:
        UsageError: not JSON (one line; a bare word gets a hint to quote it as JSON).
    """
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text, parse_constant=_not_json_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        message = f"{what} is not valid JSON: {exc}"
        word = text.strip()
        if word and _BARE_WORDS.fullmatch(word):
            quoted = shlex.quote(json.dumps(word, ensure_ascii=False))
            message += f"; to give the string {word!r}, quote it as JSON: {quoted}"
        raise UsageError(message) from None


def parse_time(text: str) -> datetime:
    """A time given as ISO 8601 (a time without an offset is local) or Unix seconds.

    Raises:
        UsageError: neither form.
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return datetime.fromtimestamp(seconds, UTC)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"bad time {text!r}: use ISO 8601 (2026-11-28T21:07:03Z, 2026-11-28) "
            "or Unix seconds (1764363600)"
        ) from None
    return when if when.tzinfo else when.astimezone()


def parse_revision(text: str) -> int:
    """A revision number (an integer >= 0), for argparse ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a revision number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a revision is >= 0, got {value}")
    return value


def parse_duration(text: str) -> int:
    """A duration such as ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``, in milliseconds (> 0).

    Raises:
        UsageError: not that form, or zero.
    """
    ms = duration_ms(text)
    if not ms:
        raise UsageError(
            f"bad duration {text!r}: use a positive whole number with a unit: "
            "500ms, 30s, 5m, 2h, 1d"
        )
    return ms


# ---- output -----------------------------------------------------------------------------------


def add_json_option(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """Add ``--json`` (the data as one JSON document on one line) to ``parser``."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=help_text or "print one JSON document on one line (default: indented JSON)",
    )


def print_json(value: Any, args: argparse.Namespace | None = None) -> None:
    """Print ``value`` as JSON on stdout: indented, or on one line when ``args.json``."""
    if args is not None and getattr(args, "json", False):
        print(json.dumps(value, ensure_ascii=False), flush=True)
    else:
        print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)


def format_ms(ms: int | None) -> str:
    """A timestamp in ms as ISO 8601 UTC with milliseconds (``-`` for None)."""
    if ms is None:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# ---- progress ---------------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Use as a context manager; call it as ``bar(done, total)`` (cheap: a background thread
    redraws five times a second) or leave it uncalled for a spinner with the elapsed time.
    ``EVSTATE_PROGRESS=1`` / ``0`` forces it on or off.
    """

    WIDTH = 30

    def __init__(
        self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        if enabled is None:
            forced = os.environ.get("EVSTATE_PROGRESS")
            enabled = forced == "1" if forced in ("0", "1") else _isatty(self.stream)
        self.enabled = enabled
        self._done = 0
        self._total = 0
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0

    def __call__(self, done: int, total: int) -> None:
        """Record progress: ``done`` units of ``total`` (drawn by the background thread)."""
        self._done, self._total = done, total

    def phase(self, label: str) -> None:
        """Show ``label`` from now on, as a spinner until the next call."""
        self.label, self._done, self._total = label, 0, 0

    def render(self) -> str:
        """The line as it would be drawn now."""
        elapsed = time.monotonic() - self._start
        if self._total > 0:
            fraction = min(self._done / self._total, 1.0)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            return (
                f"{self.label} [{bar}] {fraction * 100:3.0f}% "
                f"{_size(self._done)}/{_size(self._total)} {elapsed:.1f}s"
            )
        spin = "|/-\\"[int(elapsed * 5) % 4]
        return f"{self.label} {spin} {elapsed:.1f}s"

    def _draw(self) -> None:
        line = self.render()
        pad = max(self._drawn - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._drawn = len(line)

    def _loop(self) -> None:
        # Only long work is worth a bar: stay silent for the first half second.
        if self._stop.wait(0.5):
            return
        while True:
            self._draw()
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="evstate-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"
