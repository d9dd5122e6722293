"""Shared plumbing of the ``evstate`` command line: store selection, JSON, times, progress.

Conventions every command follows (docs/cli.md):

- The store is ``--dir DIR`` or the directory a ``--config FILE`` names (``--dir`` wins),
  default ``./data``. Commands that only read open it as a *follower*
  (:func:`evstate.follow`): they never create the directory, never take the writer lock,
  and work while another process (``evstate serve``, a service) owns it. Commands that write
  open a :class:`~evstate.Store`, which needs the writer lock.
- A mistake the user can fix (bad JSON, a bad time, a missing directory, a locked store)
  ends with one line on stderr and a non-zero exit status, never a traceback.
- Long work draws a one-line progress bar on stderr when stderr is a terminal, and nothing
  when it is piped or redirected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import evstate
from evstate import Follower, follow
from evstate.errors import StoreLockedError

__all__ = [
    "DEFAULT_DIR",
    "ProgressBar",
    "UsageError",
    "add_store_options",
    "format_ms",
    "open_follower",
    "open_writer",
    "parse_json",
    "parse_revision",
    "parse_time",
    "print_json",
    "store_dir",
]

DEFAULT_DIR = "./data"


class UsageError(Exception):
    """A mistake in what the user typed; ``main`` prints it as one line and exits 1."""


# ---- choosing the store -----------------------------------------------------------------------


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--dir`` and ``--config`` to ``parser``."""
    parser.add_argument("--dir", help=f"store directory (default {DEFAULT_DIR})")
    parser.add_argument(
        "--config", help="config.yaml naming the store directory (--dir overrides it)"
    )


def store_dir(args: argparse.Namespace) -> str:
    """The store directory the options name (``--dir``, else ``--config``, else ./data).

    Raises:
        ConfigError: the config file is invalid.
        UsageError: the config describes an in-memory store (nothing on disk to open).
    """
    directory = getattr(args, "dir", None)
    config_path = getattr(args, "config", None)
    if directory:
        return str(directory)
    if config_path:
        config = evstate.load_config(config_path)
        if config.store_method != "file_based":
            raise UsageError(
                f"{config_path} describes an in-memory store; there is nothing on disk to open"
            )
        return config.file_path
    return DEFAULT_DIR


def open_follower(args: argparse.Namespace, *, live: bool = False, label: str = "") -> Follower:
    """Open the store read-only as a follower (progress bar while it loads).

    Raises:
        StorageError: the directory does not exist (it is never created here).
    """
    with ProgressBar(label or "loading the log") as bar:
        return follow(store_dir(args), live=live, progress=bar)


def open_writer(args: argparse.Namespace, **options: Any) -> evstate.Store:
    """Open the store for writing (creates the directory; needs the writer lock).

    Raises:
        StoreLockedError: another process owns the directory (the message says what to do).
    """
    directory = store_dir(args)
    config = getattr(args, "config", None)
    try:
        with ProgressBar("opening the store"):
            if config:
                return evstate.open(directory, config=config, **options)
            return evstate.open(directory, **options)
    except StoreLockedError as exc:
        raise StoreLockedError(
            f"{exc.message}; this command needs the writer lock: stop that process, or send "
            "the write through it (read commands work alongside it)"
        ) from None


# ---- input and output -------------------------------------------------------------------------


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON (``-`` reads stdin). Raises SystemExit with one line if invalid."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"evstate: {what} is not valid JSON: {exc}") from None


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


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """Print ``value`` as JSON on stdout."""
    print(json.dumps(value, indent=indent, ensure_ascii=False))


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
