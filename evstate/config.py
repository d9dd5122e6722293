"""Configuration files: read, parse and validate ``config.yaml`` into a :class:`Config`.

Three steps, each usable on its own: :func:`read_config_text` reads the file;
:func:`parse_config_text` expands ``${VAR}`` / ``${VAR:default}`` and parses the YAML;
:func:`validate_config` checks the result, collecting **every** problem, and builds the
:class:`Config`. :func:`load_config` runs all three. The fields and their rules:
:mod:`evstate.config_schema`. Every failure is one :class:`~evstate.errors.ConfigError`
whose ``problems`` read ``"<source>: <location>: <text>"``. Keys, defaults and ranges:
docs/config.md.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from evstate.config_schema import (
    ADAPTER_CHECKS,
    KV_CHECKS,
    NO_NOTES,
    OPTION_CHECKS,
    Check,
    Config,
    FsyncPolicy,
    StoreMethod,
    auth_token_given,
    config_from_options,
    got,
    integer_in,
    one_of,
    retention_limits,
    text_field,
    unknown_key,
)
from evstate.errors import ConfigError

__all__ = [
    "Config",
    "FsyncPolicy",
    "StoreMethod",
    "config_from_options",
    "load_config",
    "parse_config_text",
    "read_config_text",
    "retention_limits",
    "validate_config",
]


# --------------------------------------------------------------------------- read and parse


def read_config_text(path: str | os.PathLike[str]) -> str:
    """Return the text of the config file at ``path`` (UTF-8; a leading BOM is dropped).

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8; the problem names the path.
    """
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8-sig") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise ConfigError([f"{where}: config file not found"]) from exc
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read config file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: not UTF-8 text (bad byte at offset {exc.start})"]) from exc


# "$${" is a literal "${"; ${NAME} or ${NAME:default}; any other "${" is malformed (an error, so
# a typo such as ${DATA DIR} cannot become a directory name).
_MALFORMED = "malformed placeholder (write ${NAME} or ${NAME:default}; $${ is a literal ${)"
_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}\n]*))?\}|\$\{")


_PLACEHOLDER = "__evstate_placeholder_{}__"
_SENTINEL = re.compile(r"__evstate_placeholder_(\d+)__")


def _mark_placeholders(text: str, env: Mapping[str, str], source: str) -> tuple[str, list[str]]:
    """Replace every placeholder with a marker the YAML parser keeps as plain text.

    Returns the marked text and the value of each placeholder (``env``, else its default).
    Every placeholder is checked, comments included, so an unset variable is always an
    error; its value is put in after parsing (:func:`_fill`), so it is never YAML.
    """
    problems: list[str] = []
    values: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        token, name, default = match.group(0, 1, 2)
        if token == "$${":
            return "${"
        if name is not None and (name in env or default is not None):
            values.append(env.get(name, default or ""))
            return _PLACEHOLDER.format(len(values) - 1)
        start = match.start()
        line, column = text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
        unset = f"environment variable {name} is not set and has no default"
        problems.append(f"{source}:{line}:{column}: {_MALFORMED if name is None else unset}")
        return token

    marked = _TOKEN.sub(substitute, text)
    if problems:
        raise ConfigError(problems)
    return marked, values


def _typed(value: str) -> Any:
    """The value of a placeholder that is a whole YAML value.

    A number, a boolean or null if it spells one (``${PORT:49134}`` is an int, an empty value
    is null), else exactly its text.
    """
    if not value.strip():
        return None
    try:
        parsed = yaml.safe_load(value)
    except (yaml.YAMLError, ValueError, RecursionError):
        return value
    if parsed is None or isinstance(parsed, bool | int | float):
        return parsed
    return value


def _fill(node: Any, values: list[str]) -> Any:
    """Put the placeholders' values into the parsed document (keys and values)."""
    if isinstance(node, dict):
        return {_fill(k, values): _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if not isinstance(node, str) or "__evstate_placeholder_" not in node:
        return node
    whole = _SENTINEL.fullmatch(node)
    if whole is not None:
        return _typed(values[int(whole.group(1))])
    return _SENTINEL.sub(lambda m: values[int(m.group(1))], node)


def parse_config_text(
    text: str, *, env: Mapping[str, str] | None = None, source: str = "<string>"
) -> dict[Any, Any]:
    """Expand the placeholders in ``text``, parse it as YAML and return the top-level mapping.

    ``${NAME}`` becomes ``env[NAME]`` (``env`` defaults to ``os.environ``), ``${NAME:default}``
    falls back to ``default`` and ``$${`` is a literal ``${``. Every placeholder must
    resolve, comments included. A value is put in after the YAML is parsed, so it is never
    YAML itself (``abc #tail`` stays ``abc #tail``); a placeholder that is a whole value is
    a number, a boolean or null when it spells one (``${PORT:49134}`` is an integer, an
    empty value is null). An empty document gives ``{}``. Nothing is validated here: see
    :func:`validate_config`.

    Raises:
        ConfigError: every unset variable without a default and every malformed placeholder,
            or a YAML syntax error, each with line and column; or a top level that is not a
            mapping.
    """
    marked, values = _mark_placeholders(text, os.environ if env is None else env, source)
    try:
        data = yaml.safe_load(marked)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = str(exc.problem or exc.context)
        if exc.context and exc.problem:
            what += f" ({exc.context})"
        raise ConfigError([f"{where}: invalid YAML: {what}"]) from exc
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError for some escapes
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from exc
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping, {got(data)}"])
    return _fill(data, values) if values else data or {}


# --------------------------------------------------------------------------- validate

_TOP_LEVEL = ("workers", "modules", "registration_namespace_grace_ms")
_WORKERS = ("iii-state", "iii-worker-manager")
_MODULES = ("modules::state::StateModule", "modules::kv_server::KvServer")
_ADAPTER_NAMES = {"workers": {n: n for n in ("kv", "redis", "bridge")}}
_ADAPTER_NAMES["modules"] = {
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
}
_STATE_CHECKS = {k: c for k, c in OPTION_CHECKS.items() if k not in ("store_method", "file_path")}
_MANAGER_CHECKS = {
    "host": text_field,
    "port": integer_in(1, 65535),
    "auth_token": auth_token_given,
    "max_message_bytes": integer_in(1024, 1 << 31),
}
# Precise messages for keys that are valid one level away, or unsafe to ignore.
_STATE_NOTES = {k: f"{k} belongs in adapter.config" for k in ("store_method", "file_path")}
_INNER_NOTES = {
    k: f"{k} is an option of the state block: put it beside 'adapter'"
    for k in _STATE_CHECKS
    if k != "save_interval_ms"
}
_REDIS_NOTES = {
    **_INNER_NOTES,
    **{
        k: f"{k} is a key of the kv adapter; the redis adapter takes only redis_url"
        for k in ("store_method", "file_path", "save_interval_ms")
    },
}
_MANAGER_NOTES = dict.fromkeys(
    ("rbac", "middleware_function_id"),
    "evstate's listener has no RBAC or middleware, and ignoring this key would leave it open",
)


@dataclass
class _Found:
    """What the walk found (validated leaves only), before precedence and defaults apply."""

    state: dict[str, Any] | None = None  # None: no state worker/module
    adapter: str = "kv"
    inner: dict[str, Any] = field(default_factory=dict)  # the adapter's config leaves
    adapter_config: Mapping[Any, Any] | None = None  # None: no adapter `config` block
    kv_server: dict[str, Any] | None = None  # None: no KvServer module
    kv_server_configured: bool = False  # KvServer has a `config` block
    server: dict[str, Any] = field(default_factory=dict)


class _Report:
    """Collects problems as ``"<source>: <location>: <text>"``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, loc: str, text: str) -> None:
        self.problems.append(f"{self.source}: {loc}: {text}")

    def mapping(
        self, value: object, loc: str, *, null_ok: bool = False
    ) -> Mapping[Any, Any] | None:
        if value is None and null_ok:
            return {}
        if isinstance(value, Mapping):
            return value
        self.add(loc, f"must be a mapping, {got(value)}")
        return None

    def leaves(
        self,
        block: Mapping[Any, Any],
        loc: str,
        checks: Mapping[str, Check],
        extra: tuple[str, ...] = (),
        notes: Mapping[str, str] = NO_NOTES,
    ) -> dict[str, Any]:
        """Report keys outside ``checks`` and ``extra``, and bad values; return the good leaves."""
        good = {}
        for key, value in block.items():
            check = checks.get(key) if isinstance(key, str) else None
            if check is None:
                if key not in extra:
                    self.add(
                        _at(loc, key),
                        unknown_key(key, dict.fromkeys([*checks, *extra]), notes=notes),
                    )
            elif (text := check(value)) is not None:
                self.add(_at(loc, key), text)
            else:
                good[key] = value
        return good

    def ident(self, block: Mapping[Any, Any], loc: str, key: str) -> str | None:
        """Return the required string ``block[key]`` (worker name, class), or report it."""
        value = block.get(key)
        if isinstance(value, str):
            return value
        if value is None:
            self.add(loc, f"missing required key '{key}'")
        else:
            self.add(_at(loc, key), f"must be a string, {got(value)}")
        return None


def _at(loc: str, key: object) -> str:
    return f"{loc}.{key}" if loc else str(key)


def validate_config(raw: Mapping[Any, Any], *, source: str = "<string>") -> Config:
    """Check a parsed config (either form, see docs/config.md) and return its :class:`Config`.

    Workers and modules evstate does not interpret are ignored. At the top level and inside the
    blocks it interprets, an unknown key is an error, with a "did you mean" hint when close.

    Raises:
        ConfigError: listing every problem (unknown key, wrong type, value out of range, unknown
            choice, unavailable adapter, duplicate block), each with its location.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the top level must be a mapping, {got(raw)}"])
    report, found = _Report(source), _Found()
    report.leaves(raw, "", {"registration_namespace_grace_ms": integer_in(0)}, _TOP_LEVEL)
    if "workers" in raw and "modules" in raw:
        report.add("modules", "cannot be combined with 'workers': use one form per file")
    else:
        for form in ("workers", "modules"):
            if form in raw:
                _read_entries(report, found, form, raw[form])
    if report.problems:
        raise ConfigError(report.problems)
    return _resolve(found, source)


def _read_entries(report: _Report, found: _Found, form: str, value: object) -> None:
    id_key, known = ("name", _WORKERS) if form == "workers" else ("class", _MODULES)
    if value is not None and not isinstance(value, list):
        report.add(form, f"must be a list, {got(value)}")
    first: dict[str, str] = {}
    for i, entry in enumerate(value if isinstance(value, list) else []):
        loc = f"{form}[{i}]"
        block = report.mapping(entry, loc)
        ident = None if block is None else report.ident(block, loc, id_key)
        if block is None or ident not in known:
            continue  # another engine worker or module: accepted and ignored
        if ident in first:
            report.add(loc, f"'{ident}' appears twice (first at {first[ident]}); evstate takes one")
            continue
        first[ident] = loc
        report.leaves(block, loc, {}, (id_key, "config"))
        at = f"{loc}.config"
        cfg = report.mapping(block.get("config"), at, null_ok=True)
        if cfg is None:
            continue
        if ident == known[0]:  # iii-state or StateModule
            found.state = report.leaves(cfg, at, _STATE_CHECKS, ("adapter",), _STATE_NOTES)
            _read_adapter(report, found, cfg.get("adapter"), f"{at}.adapter", id_key, form)
        elif ident == "iii-worker-manager":
            found.server = report.leaves(cfg, at, _MANAGER_CHECKS, notes=_MANAGER_NOTES)
        else:
            found.kv_server = report.leaves(cfg, at, KV_CHECKS, notes=_INNER_NOTES)
            found.kv_server_configured = block.get("config") is not None


def _read_adapter(
    report: _Report, found: _Found, value: object, loc: str, key: str, form: str
) -> None:
    block = None if value is None else report.mapping(value, loc)  # `adapter: null` = absent
    if block is None:
        return
    report.leaves(block, loc, {}, (key, "config"))
    names = _ADAPTER_NAMES[form]
    ident = report.ident(block, loc, key)
    adapter = None if ident is None else names.get(ident)
    if ident is not None and adapter is None:
        report.add(_at(loc, key), one_of(*names)(ident) or "")
    elif adapter is not None and adapter not in ADAPTER_CHECKS:
        report.add(_at(loc, key), f"the {adapter} adapter is not available in this version")
        adapter = None
    cfg = report.mapping(block.get("config"), f"{loc}.config", null_ok=True)
    if adapter is not None and cfg is not None:
        found.adapter = adapter
        notes = _REDIS_NOTES if adapter == "redis" else _INNER_NOTES
        found.inner = report.leaves(cfg, f"{loc}.config", ADAPTER_CHECKS[adapter], notes=notes)
        found.adapter_config = cfg if block.get("config") is not None else None


def _resolve(found: _Found, source: str) -> Config:
    """Apply precedence and defaults (docs/config.md, "Precedence") to what the walk found."""
    state, kv_server = found.state or {}, found.kv_server or {}
    values: dict[str, Any] = dict(state)
    for key in ("store_method", "file_path", "save_interval_ms"):
        for layer in (state, found.inner, kv_server):  # the first layer that gives it wins
            if key in layer:
                values[key] = layer[key]
                break
    present = found.state is not None or found.kv_server is not None
    configured = found.adapter_config is not None or found.kv_server_configured
    if present and not configured and "store_method" not in values and found.adapter == "kv":
        values["store_method"] = "in_memory"  # iii parity: the kv store without a config block
    if "redis_url" in found.inner:
        values["redis_url"] = found.inner["redis_url"]
    for key, name in (
        ("host", "server_host"),
        ("port", "server_port"),
        ("auth_token", "server_auth_token"),
        ("max_message_bytes", "server_max_message_bytes"),
    ):
        if key in found.server:
            values[name] = found.server[key]
    return Config(
        **values,
        adapter=found.adapter,
        adapter_config=MappingProxyType(copy.deepcopy(dict(found.adapter_config or {}))),
        kv_server=found.kv_server is not None,
        source=source,
    )


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand, parse and validate the config file at ``path`` (``Config.source`` = path).

    ``env`` (default ``os.environ``) supplies the ``${VAR}`` values.

    Raises:
        ConfigError: the problems of the first step that fails (read, expand and parse,
            validate), each naming the path.
    """
    source = os.fspath(path)
    raw = parse_config_text(read_config_text(source), env=env, source=source)
    return validate_config(raw, source=source)
