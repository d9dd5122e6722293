"""Which store a command works on, and opening it to read or to write.

The options name one of three targets (docs/cli.md, "Choosing the store"):

- **a running server**: ``--url URL``, else ``$EVSTATE_URL`` when neither ``--dir`` nor
  ``--config`` is given, for the commands that have a server function (``get``, ``set``,
  ``list``, ``ttl``, ...; :mod:`evstate.cli.remote`). ``--token``, else ``$EVSTATE_AUTH_TOKEN``.
- **Redis**: a ``--config`` naming the redis adapter. Every command opens that Redis store
  (it takes no lock: every process shares it); ``--dir`` beside it is refused.
- **a directory**: ``--dir``, else the config's ``file_path``, else ``./data``. Reads open
  it as a follower (no lock, never created); writes open the store, which takes the
  writer lock.

No phantom stores: a directory is read only if it holds a store (log segments,
snapshots), a store is created only in a missing or empty directory, and ``snapshot`` /
``compact`` / trigger repairs need an existing store.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import evstate
from evstate import Follower, Store
from evstate.cli.common import ProgressBar, UsageError
from evstate.config import Config
from evstate.errors import StorageError, StoreLockedError

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_SERVER_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "LockHint",
    "Target",
    "add_store_options",
    "check_new_store_directory",
    "check_store_directory",
    "open_reader",
    "open_writer",
    "resolve_target",
    "send_through_server_hint",
    "stop_the_owner_hint",
]

DEFAULT_DIR = "./data"
URL_ENV = "EVSTATE_URL"
TOKEN_ENV = "EVSTATE_AUTH_TOKEN"
DEFAULT_SERVER_URL = "ws://127.0.0.1:49134"  # where evstate serve listens by default

# The files a file store keeps in its directory (docs/format.md): log segments and
# snapshots (20-digit revisions), the recorded head, the lock note, the trigger cursors.
_STORE_FILE = re.compile(r"\d{20}\.(log|snap)|HEAD|LOCK|triggers\.cbor")


def add_store_options(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    """Add ``--dir`` and ``--config`` to ``parser``; with ``server``, ``--url`` and ``--token``."""
    parser.add_argument("--dir", help=f"store directory (default {DEFAULT_DIR})")
    parser.add_argument(
        "--config",
        help="config.yaml naming the store: its directory (--dir overrides it) or Redis",
    )
    if server:
        parser.add_argument(
            "--url",
            help=f"a running evstate serve, ws://HOST:PORT (default ${URL_ENV} when neither "
            "--dir nor --config is given)",
        )
        parser.add_argument("--token", help=f"the server's auth token (default ${TOKEN_ENV})")


@dataclass(frozen=True)
class Target:
    """Where a command's store is: ``url`` (a server), or ``config`` and ``directory``."""

    url: str | None = None
    token: str | None = None
    config_path: str | None = None
    config: Config | None = None
    directory: str | None = None

    @property
    def is_redis(self) -> bool:
        """The config names the redis adapter."""
        return self.config is not None and self.config.adapter == "redis"

    def server_url(self) -> str:
        """The URL a server of this config listens on (the default one without a config)."""
        if self.config is None:
            return DEFAULT_SERVER_URL
        host = self.config.server_host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.config.server_port}"


def _local_options(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "dir", None) or getattr(args, "config", None))


def resolve_target(args: argparse.Namespace) -> Target:
    """The target the options of ``args`` name (see the module doc).

    Raises:
        UsageError: ``--url`` with ``--dir``/``--config``; ``--dir`` with a redis config; a
            config of an in-memory store (nothing to open from another process).
        ConfigError: the config file is invalid.
    """
    url = getattr(args, "url", None)
    if url and _local_options(args):
        raise UsageError("give --url, or --dir/--config, not both")
    if hasattr(args, "url") and not url and not _local_options(args):
        url = os.environ.get(URL_ENV) or None
    if url:
        token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
        return Target(url=url, token=token)
    config_path = getattr(args, "config", None)
    directory = getattr(args, "dir", None)
    config = evstate.load_config(config_path) if config_path else None
    if config is not None and config.adapter == "redis":
        if directory:
            raise UsageError(
                f"--dir names a directory, but {config_path} keeps the store in Redis "
                "(the redis adapter): give one of them"
            )
        return Target(config_path=config_path, config=config)
    if config is not None and config.store_method != "file_based":
        raise UsageError(
            f"{config_path} describes an in-memory store; there is nothing on disk to open"
        )
    if not directory:
        directory = config.file_path if config is not None else DEFAULT_DIR
    return Target(config_path=config_path, config=config, directory=str(directory))


# ---- directories ----------------------------------------------------------------------------


def _contents(directory: str) -> list[str] | None:
    """The names in ``directory``; None if it does not exist.

    Raises:
        StorageError: it is not a directory, or cannot be read.
    """
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise StorageError(f"{os.path.abspath(directory)} is not a directory") from None
    except OSError as exc:
        raise StorageError(f"cannot read {os.path.abspath(directory)}: {exc.strerror}") from None


def _holds_a_store(names: list[str]) -> bool:
    return any(_STORE_FILE.fullmatch(name) for name in names)


def check_store_directory(directory: str) -> None:
    """Raise unless ``directory`` holds a store (it is never created here).

    Raises:
        StorageError: missing, not a directory, or no store in it.
    """
    names = _contents(directory)
    where = os.path.abspath(directory)
    if names is None:
        raise StorageError(f"no store directory at {where}")
    if not _holds_a_store(names):
        what = "it is empty" if not names else "no log segments or snapshots in it"
        raise StorageError(f"{where} is not an evstate store ({what})")


def check_new_store_directory(directory: str) -> None:
    """Raise unless a store may live in ``directory``: a store, or a missing or empty one.

    Raises:
        StorageError: it holds other files (a store is never created among them).
    """
    names = _contents(directory)
    if names and not _holds_a_store(names):
        raise StorageError(
            f"{os.path.abspath(directory)} holds other files and no evstate store; a store "
            "is created only in a new or empty directory: give --dir one"
        )


# ---- opening --------------------------------------------------------------------------------


def _url_not_used_here(args: argparse.Namespace) -> str | None:
    """Why ``$EVSTATE_URL`` did not apply, when it is set but this command reads files."""
    if hasattr(args, "url") or _local_options(args) or not os.environ.get(URL_ENV):
        return None
    command = getattr(args, "command", "this command")
    return (
        f"{command} reads the store's files, not the server ({URL_ENV} is used by get, "
        "list, groups, keys, ttl, set, update, delete and cas): run it where the files are, "
        "or give --dir"
    )


def open_reader(
    args: argparse.Namespace,
    *,
    live: bool = False,
    label: str = "",
    target: Target | None = None,
) -> Follower | Store:
    """Open the target to read: a follower of the directory, or the Redis store.

    ``live`` keeps a follower reading what the owner writes (``tail -f``). ``target`` is
    :func:`resolve_target`'s answer when the caller has it already.

    Raises:
        StorageError: the directory is missing or holds no store (nothing is created).
        BackendUnavailableError: Redis cannot be reached.
    """
    target = target or resolve_target(args)
    if target.is_redis:
        assert target.config is not None
        with ProgressBar(label or "connecting to Redis"):
            return evstate.open(config=target.config)
    assert target.directory is not None
    try:
        check_store_directory(target.directory)
    except StorageError as exc:
        why = _url_not_used_here(args)
        raise StorageError(f"{exc.message}; {why}" if why else exc.message) from None
    with ProgressBar(label or "loading the log") as bar:
        return evstate.follow(target.directory, live=live, progress=bar)


def send_through_server_hint(args: argparse.Namespace, target: Target) -> str:
    """The lock error's advice for a state write: send it through the running server."""
    command = getattr(args, "command", "set")
    return (
        f"{command} needs the writer lock: send it through that server instead with "
        f"{URL_ENV}={target.server_url()} evstate {command} ... (or --url; the address "
        "evstate serve logged, and --token if it has one), or stop it first"
    )


def stop_the_owner_hint(args: argparse.Namespace, target: Target) -> str:
    """The lock error's advice for upkeep and repairs: stop the owner first."""
    command = getattr(args, "command", "this command")
    return (
        f"{command} needs the writer lock: stop that process first (read commands work "
        "alongside it; evstate serve takes snapshots and compacts by itself)"
    )


LockHint = Callable[[argparse.Namespace, Target], str]
"""What a lock error advises: ``(args, target) -> text`` appended to the error."""


def open_writer(
    args: argparse.Namespace,
    *,
    create: bool = True,
    lock_hint: LockHint = stop_the_owner_hint,
    target: Target | None = None,
    **options: Any,
) -> Store:
    """Open the target to write: the file store (writer lock) or the Redis store.

    ``create`` lets a missing or empty directory become a new store; without it the store
    must exist. ``lock_hint`` words the advice of the error when another process holds the
    lock (:func:`send_through_server_hint`, :func:`stop_the_owner_hint`). ``target`` as for
    :func:`open_reader`; ``options`` override config fields.

    Raises:
        StoreLockedError: another process owns the directory (the message says what to do).
        StorageError: the directory holds other files, or (``create`` False) no store.
    """
    target = target or resolve_target(args)
    if target.is_redis:
        assert target.config is not None
        with ProgressBar("connecting to Redis"):
            return evstate.open(config=target.config, **options)
    directory = target.directory
    assert directory is not None
    if create:
        check_new_store_directory(directory)
    else:
        check_store_directory(directory)
    try:
        with ProgressBar("opening the store"):
            if target.config is not None:
                return evstate.open(directory, config=target.config, **options)
            return evstate.open(directory, **options)
    except StoreLockedError as exc:
        raise StoreLockedError(f"{exc.message}; {lock_hint(args, target)}") from None
