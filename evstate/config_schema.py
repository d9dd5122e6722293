"""The configuration's fields: :class:`Config`, its defaults, and the check of every field.

:class:`Config` validates itself on construction; :func:`config_from_options` and
:meth:`Config.replace` apply the same rules to keyword options (``evstate.open(path,
**options)``). Reading a file is :mod:`evstate.config`. Keys, defaults and ranges:
docs/config.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from evstate.errors import ConfigError
from evstate.values import printable_text

__all__ = [
    "ADAPTER_CHECKS",
    "DEFAULT_LISTING_IDLE_MS",
    "DEFAULT_MAX_OPEN_LISTINGS",
    "DEFAULT_RETENTION",
    "KV_CHECKS",
    "NO_NOTES",
    "OPTION_CHECKS",
    "Check",
    "Config",
    "auth_token_given",
    "FsyncPolicy",
    "StoreMethod",
    "config_from_options",
    "got",
    "integer_in",
    "one_of",
    "parse_duration_ms",
    "retention_limits",
    "text_field",
    "unknown_key",
]

StoreMethod = Literal["file_based", "in_memory"]
FsyncPolicy = Literal["always", "interval", "never"]

_MIB = 1024 * 1024
NO_NOTES: Mapping[str, str] = MappingProxyType({})
Check = Callable[[object], "str | None"]  # None: the value is fine; else the problem text


def got(value: object) -> str:
    """Describe a rejected value the way a YAML author sees it: ``got a string '10'``."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "got null"
    if type(value) in kinds:
        return f"got {kinds[type(value)]} {value!r}"
    return "got a mapping" if isinstance(value, Mapping) else f"got a {type(value).__name__}"


def _hint(word: object, choices: Any) -> str:
    if not isinstance(word, str):
        return ""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(word, names, n=1)
    # A cut-short word ("file" for "file_based") is too short for difflib's ratio.
    close = close or [n for n in names if len(word) > 1 and n.startswith(word)]
    return f" (did you mean '{close[0]}'?)" if len(close) == 1 else ""


def unknown_key(
    key: object, allowed: Any, what: str = "key", notes: Mapping[str, str] = NO_NOTES
) -> str:
    """The problem text of an unknown key: a note about it, or the closest allowed name."""
    if isinstance(key, str) and key in notes:
        return f"unknown {what} here: {notes[key]}"
    return f"unknown {what}" + (_hint(key, allowed) or f" (expected one of: {', '.join(allowed)})")


def _unknown_option(name: str) -> Check:
    return lambda _value: unknown_key(name, OPTION_CHECKS, "option")


def one_of(*choices: str) -> Check:
    """A check that the value is one of ``choices`` (with a "did you mean" hint)."""

    def check(value: object) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        shown = repr(value) if isinstance(value, str) else got(value).removeprefix("got ")
        return f"must be one of {', '.join(choices)}, got {shown}{_hint(value, choices)}"

    return check


def integer_in(
    low: int, high: int | None = None, *, nullable: bool = False, note: str = ""
) -> Check:
    """A check that the value is an int in ``[low, high]`` (or None, if ``nullable``)."""

    def check(value: object) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, {got(value)}"
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            return f"must be {bounds}, got {value}{note}"
        return None

    return check


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, {got(value)}"


def text_field(value: object) -> str | None:
    """The problem with a text field's value, or None.

    It must be a non-empty str that can be written anywhere: no NUL byte (no path or
    header can hold one) and valid Unicode (an environment variable with undecodable bytes
    reaches Python as lone surrogates, which no encoder takes).
    """
    if not isinstance(value, str):
        return f"must be a string, {got(value)}"
    if not value:
        return "must not be empty"
    if "\0" in value:
        return "must not contain a NUL byte"
    if printable_text(value) != value:
        return "must be valid Unicode text (it holds bytes that are not UTF-8)"
    return None


_NULL_SPELLINGS = frozenset({"~", "null", "Null", "NULL"})


def auth_token_given(value: object) -> str | None:
    """The problem with an ``auth_token`` a config file names, or None.

    A config that names a token which resolves to nothing (an empty or unset variable, null,
    blanks, a comment) refuses to start instead of serving without auth.
    """
    if value is None:
        return "resolves to nothing (null): set it to the token, or remove the key"
    return _auth_token(value)


def _auth_token(value: object) -> str | None:
    if value is None:
        return None  # no token configured
    if (text := text_field(value)) is not None:
        return text.replace("must not be empty", "is empty (an unset or empty variable?)")
    assert isinstance(value, str)
    if not value.strip() or value.strip() in _NULL_SPELLINGS or value.lstrip().startswith("#"):
        return f"resolves to nothing ({value!r}): set it to the token, or remove the key"
    if value != value.strip():
        return "has spaces at its ends: the token would not be what you meant"
    return None


_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEFAULT_RETENTION: Mapping[str, Any] = MappingProxyType({"revisions": 1_000_000})


def parse_duration_ms(text: object) -> int | None:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"500ms"`` in milliseconds; None if bad."""
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else None


def retention_limits(value: object) -> tuple[int | None, int | None]:
    """``(max revisions, max age in ms)`` of a validated ``retention`` value; None = no cap."""
    if not isinstance(value, Mapping):
        return None, None  # "forever"
    return value.get("revisions"), parse_duration_ms(value.get("duration"))


def _retention(value: object) -> str | None:
    usage = "must be 'forever' or a mapping with 'revisions' (an integer) and/or 'duration' ('7d')"
    if value == "forever":
        return None
    if not isinstance(value, Mapping) or not value:
        return f"{usage}, {got(value)}"
    for key, item in value.items():
        if key == "revisions":
            if (text := integer_in(1)(item)) is not None:
                return f"revisions {text}"
        elif key == "duration":
            if parse_duration_ms(item) is None or parse_duration_ms(item) == 0:
                return f"duration must look like 7d, 12h, 30m, 90s or 500ms, {got(item)}"
        else:
            return f"unknown retention key {key!r}: {usage}"
    return None


DEFAULT_MAX_OPEN_LISTINGS = 64  # list_entries listings held in memory at once
DEFAULT_LISTING_IDLE_MS = 120_000  # as long as iii's state worker keeps a listing

# The keyword options of evstate.open(), which are also the leaves a config file can set.
OPTION_CHECKS: dict[str, Check] = {
    "store_method": one_of("file_based", "in_memory"),
    "file_path": text_field,
    "fsync": one_of("always", "interval", "never"),
    "fsync_interval_ms": integer_in(1, 60_000),
    "segment_size_bytes": integer_in(4096, 1024 * _MIB),
    "max_value_bytes": integer_in(1, nullable=True, note=" (omit it or use null for no limit)"),
    "save_interval_ms": integer_in(100, 3_600_000),
    "triggers_enabled": _boolean,
    "retention": _retention,
    "max_open_listings": integer_in(1, 100_000),
    "listing_idle_ms": integer_in(1000, 86_400_000),
}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(value: object) -> str | None:
    if (text := text_field(value)) is not None:
        return text
    assert isinstance(value, str)
    if value.startswith(_REDIS_SCHEMES):
        return None
    return f"must start with {', '.join(_REDIS_SCHEMES)}, got {value!r}"


# Adapters this version opens, each with the checks of its `config` block. "bridge" is a known
# name, refused for now. Adding one is an entry here: its checked block reaches the store as
# Config.adapter_config, and Config.adapter accepts its name.
KV_CHECKS = {k: OPTION_CHECKS[k] for k in ("store_method", "file_path", "save_interval_ms")}
_REDIS_CHECKS: dict[str, Check] = {"redis_url": _redis_url}
ADAPTER_CHECKS: dict[str, dict[str, Check]] = {"kv": KV_CHECKS, "redis": _REDIS_CHECKS}
_FIELD_CHECKS: dict[str, Check] = {
    **OPTION_CHECKS,
    "adapter": one_of(*ADAPTER_CHECKS),
    "adapter_config": lambda v: None if isinstance(v, Mapping) else f"must be a mapping, {got(v)}",
    "kv_server": _boolean,
    "server_host": text_field,
    "server_port": integer_in(1, 65535),
    "server_auth_token": _auth_token,
    "server_max_message_bytes": integer_in(1024, 1 << 31),
    "redis_url": _redis_url,
    "source": lambda v: None if v is None else text_field(v),
}


@dataclass(frozen=True, slots=True)
class Config:
    """A validated evstate configuration: construction checks every field (``ConfigError``).

    ``file_path`` is a directory, kept as written (a relative one is resolved against the working
    directory by the opener). ``adapter_config`` is the adapter's ``config`` block as written,
    read-only; the typed fields are authoritative. Derive variants with :meth:`replace`.
    """

    store_method: StoreMethod = "file_based"
    file_path: str = "./data"
    save_interval_ms: int = 5000
    max_value_bytes: int | None = None
    triggers_enabled: bool = True
    fsync: FsyncPolicy = "always"
    fsync_interval_ms: int = 200
    segment_size_bytes: int = 64 * _MIB
    retention: str | Mapping[str, Any] = field(
        default_factory=lambda: DEFAULT_RETENTION, hash=False
    )
    max_open_listings: int = DEFAULT_MAX_OPEN_LISTINGS
    listing_idle_ms: int = DEFAULT_LISTING_IDLE_MS
    adapter: str = "kv"
    adapter_config: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    kv_server: bool = False
    server_host: str = "127.0.0.1"
    server_port: int = 49134
    server_auth_token: str | None = field(default=None, repr=False)
    server_max_message_bytes: int = 64 * _MIB
    redis_url: str = "redis://127.0.0.1:6379/0"
    source: str | None = None

    def __post_init__(self) -> None:
        problems = [
            f"Config.{name}: {text}"
            for name, check in _FIELD_CHECKS.items()
            if (text := check(getattr(self, name))) is not None
        ]
        if problems:
            raise ConfigError(problems)

    def replace(self, **options: Any) -> Config:
        """Return a copy with ``options`` applied (names and rules of :func:`config_from_options`).

        Raises:
            ConfigError: listing every unknown option and every invalid value.
        """
        clean = dict(options)
        if isinstance(clean.get("file_path"), os.PathLike):
            clean["file_path"] = os.fspath(clean["file_path"])
        problems = [
            f"<options>: {name}: {text}"
            for name, value in clean.items()
            if (text := OPTION_CHECKS.get(name, _unknown_option(name))(value)) is not None
        ]
        if problems:
            raise ConfigError(problems)
        return dataclasses.replace(self, **clean)


def config_from_options(**options: Any) -> Config:
    """Return the default :class:`Config` with keyword ``options`` applied (``evstate.open``).

    Options: store_method, file_path (str or path-like), fsync, fsync_interval_ms,
    segment_size_bytes, max_value_bytes, save_interval_ms, triggers_enabled, under the rules of
    the config file. Unlike a file, no options at all means ``store_method="file_based"``.

    Raises:
        ConfigError: listing every unknown option and every invalid value.
    """
    return Config().replace(**options)
