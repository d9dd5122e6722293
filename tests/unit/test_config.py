"""evstate.config: reading, ${VAR} expansion, parsing, validation, options, both file forms."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import pytest

from evstate.config import (
    Config,
    config_from_options,
    load_config,
    parse_config_text,
    read_config_text,
    validate_config,
)
from evstate.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]

# The configuration example of the State module documentation (state-module.md), verbatim.
DOC_EXAMPLE = """\
modules:
  - class: modules::state::StateModule
    config:
      adapter:
        class: modules::state::adapters::KvStore
        config:
          store_method: file_based
          file_path: ./data/state_store.db
"""
# The same document's "Data Persistence" block, verbatim.
DOC_KV_SERVER = """\
modules:
  - class: modules::kv_server::KvServer
    config:
      store_method: file_based
      file_path: ./data/kv_store
      save_interval_ms: 5000  # Save every 5 seconds
"""
# The iii engine's current form, as in the reference's config.yaml sample.
III_WORKERS = """\
registration_namespace_grace_ms: 5000
workers:
  - name: iii-worker-manager
    config: { port: 49134, host: 0.0.0.0 }
  - name: iii-http
    config: { port: 3111, cors: { allowed_origins: ["*"] } }
  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store.db
          save_interval_ms: 5000
      triggers_enabled: true
      max_value_bytes: 1048576
      save_interval_ms: 2000
"""


def cfg(text: str, env: Mapping[str, str] | None = None) -> Config:
    return validate_config(parse_config_text(text, env=env or {}), source="config.yaml")


def problems(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg(text, env)
    return info.value.problems


def state(block: str) -> str:
    """A workers-form file whose iii-state config is ``block`` (indented YAML lines)."""
    body = "".join(f"      {line}\n" for line in block.strip("\n").splitlines())
    return f"workers:\n  - name: iii-state\n    config:\n{body}"


def kv(block: str) -> str:
    """A workers-form file whose kv adapter config is ``block``."""
    inner = "".join(f"    {line}\n" for line in block.strip("\n").splitlines())
    return state(f"adapter:\n  name: kv\n  config:\n{inner}")


# --------------------------------------------------------------------------- the two forms


def test_iii_workers_form() -> None:
    c = cfg(III_WORKERS)
    assert c.store_method == "file_based"
    assert c.file_path == "./data/state_store.db"
    assert c.save_interval_ms == 2000  # the state worker's value overrides the adapter's
    assert c.max_value_bytes == 1048576
    assert c.triggers_enabled is True
    assert (c.server_host, c.server_port) == ("0.0.0.0", 49134)
    assert c.adapter == "kv"
    assert dict(c.adapter_config) == {
        "store_method": "file_based",
        "file_path": "./data/state_store.db",
        "save_interval_ms": 5000,
    }
    assert c.kv_server is False
    assert c.source == "config.yaml"


def test_doc_example_verbatim() -> None:
    c = cfg(DOC_EXAMPLE)
    assert (c.store_method, c.file_path, c.save_interval_ms) == (
        "file_based",
        "./data/state_store.db",
        5000,
    )
    assert (c.adapter, c.kv_server, c.fsync) == ("kv", False, "always")


def test_doc_in_memory_snippet() -> None:
    text = DOC_EXAMPLE.replace(
        "store_method: file_based\n          file_path: ./data/state_store.db\n",
        "store_method: in_memory\n",
    )
    assert cfg(text).store_method == "in_memory"


def test_doc_kv_server_block_verbatim() -> None:
    c = cfg(DOC_KV_SERVER)
    assert c.kv_server is True
    assert (c.store_method, c.file_path, c.save_interval_ms) == (
        "file_based",
        "./data/kv_store",
        5000,
    )


def test_doc_state_module_with_kv_server() -> None:
    c = cfg(DOC_EXAMPLE + DOC_KV_SERVER.removeprefix("modules:\n").replace("5000", "750"))
    assert c.kv_server is True
    assert c.file_path == "./data/state_store.db"  # the state module's wins
    assert c.save_interval_ms == 750  # the state module gives none: kv_server's applies


def test_modules_form_state_keys_and_evstate_options() -> None:
    text = """\
modules:
  - class: modules::api::RestApiModule
    config: { port: 3111 }
  - class: modules::state::StateModule
    config:
      adapter:
        class: modules::state::adapters::KvStore
        config: { store_method: file_based, file_path: /var/lib/evstate }
      triggers_enabled: false
      fsync: interval
      fsync_interval_ms: 50
      segment_size_bytes: 4096
"""
    c = cfg(text)
    assert (c.file_path, c.triggers_enabled) == ("/var/lib/evstate", False)
    assert (c.fsync, c.fsync_interval_ms, c.segment_size_bytes) == ("interval", 50, 4096)


@pytest.mark.parametrize(
    ("state_top", "adapter_inner", "kv_server", "expected"),
    [
        (300, 400, 500, 300),
        (None, 400, 500, 400),
        (None, None, 500, 500),
        (None, None, None, 5000),
        (300, None, None, 300),
    ],
)
def test_save_interval_precedence(
    state_top: int | None, adapter_inner: int | None, kv_server: int | None, expected: int
) -> None:
    inner = f", save_interval_ms: {adapter_inner}" if adapter_inner else ""
    text = (
        "modules:\n  - class: modules::state::StateModule\n    config:\n"
        "      adapter:\n        class: modules::state::adapters::KvStore\n"
        f"        config: {{store_method: file_based{inner}}}\n"
    )
    if state_top:
        text += f"      save_interval_ms: {state_top}\n"
    if kv_server:
        text += "  - class: modules::kv_server::KvServer\n"
        text += f"    config: {{save_interval_ms: {kv_server}}}\n"
    assert cfg(text).save_interval_ms == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "file_based"),  # no file content: defaults
        ("workers: []\n", "file_based"),
        ("workers:\n  - name: iii-http\n", "file_based"),  # no state worker: defaults
        ("workers:\n  - name: iii-state\n", "in_memory"),  # iii parity: no adapter config
        (state("triggers_enabled: true"), "in_memory"),
        (state("adapter: {name: kv}"), "in_memory"),
        (state("adapter: {name: kv, config: null}"), "in_memory"),
        (state("adapter: {name: kv, config: {}}"), "file_based"),  # config given, no method
        (kv("file_path: ./x"), "file_based"),
        (kv("store_method: in_memory"), "in_memory"),
        ("modules:\n  - class: modules::kv_server::KvServer\n", "in_memory"),
        ("modules:\n  - class: modules::kv_server::KvServer\n    config: {}\n", "file_based"),
    ],
)
def test_store_method_defaults(text: str, expected: str) -> None:
    assert cfg(text).store_method == expected


def test_defaults_without_any_state_block() -> None:
    assert cfg("workers:\n  - name: iii-cron\n") == Config(source="config.yaml")
    c = Config()
    assert (c.store_method, c.file_path, c.save_interval_ms, c.max_value_bytes) == (
        "file_based",
        "./data",
        5000,
        None,
    )
    assert (c.fsync, c.fsync_interval_ms, c.segment_size_bytes) == ("always", 200, 64 * 1024**2)
    assert (c.triggers_enabled, c.adapter, dict(c.adapter_config), c.kv_server) == (
        True,
        "kv",
        {},
        False,
    )
    assert (c.server_host, c.server_port, c.source) == ("127.0.0.1", 49134, None)


def test_relative_file_path_is_kept_as_written() -> None:
    assert cfg(kv("file_path: ../state//dir")).file_path == "../state//dir"
    assert cfg(kv("file_path: ~/data")).file_path == "~/data"  # no ~ expansion either


def test_other_workers_and_modules_are_ignored_whatever_they_hold() -> None:
    text = """\
workers:
  - name: iii-queue
    config: [not, a, mapping]
    image: whatever
  - name: some-sdk-worker
"""
    assert cfg(text) == Config(source="config.yaml")
    assert cfg("modules:\n  - class: x::Y\n    surprise: 1\n") == Config(source="config.yaml")


def test_null_blocks_count_as_empty() -> None:
    assert cfg("workers:\n").store_method == "file_based"
    assert cfg("workers:\n  - name: iii-worker-manager\n    config:\n").server_port == 49134
    assert cfg(state("adapter: null")).store_method == "in_memory"
    assert (
        cfg(state("max_value_bytes: null\nadapter: {name: kv, config: {}}")).max_value_bytes is None
    )


# --------------------------------------------------------------------------- ${VAR} expansion


def test_env_set_unset_with_default_and_typing() -> None:
    text = kv("file_path: ${DATA:./data}\nsave_interval_ms: ${SAVE_MS:1000}")
    assert cfg(text, env={}).file_path == "./data"
    assert cfg(text, env={}).save_interval_ms == 1000  # the default is parsed as YAML: an int
    c = cfg(text, env={"DATA": "/srv/state", "SAVE_MS": "250"})
    assert (c.file_path, c.save_interval_ms) == ("/srv/state", 250)


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVSTATE_TEST_DIR", "/from/environ")
    raw = parse_config_text("a: ${EVSTATE_TEST_DIR}\n")
    assert raw == {"a": "/from/environ"}


def test_env_unset_without_default_is_an_error_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("a: 1\nb: ${NOPE}\nc: x${ALSO_NOPE}\n", env={}, source="c.yaml")
    assert info.value.problems == [
        "c.yaml:2:4: environment variable NOPE is not set and has no default",
        "c.yaml:3:5: environment variable ALSO_NOPE is not set and has no default",
    ]


def test_env_empty_value_and_empty_default() -> None:
    assert parse_config_text("a: x${E}y\n", env={"E": ""}) == {"a": "xy"}
    assert parse_config_text("a: ${E:}\n", env={}) == {"a": None}
    assert (
        cfg(state("max_value_bytes: ${LIMIT:}\nadapter: {name: kv, config: {}}")).max_value_bytes
        is None
    )


def test_env_escape_and_malformed_placeholders() -> None:
    assert parse_config_text("a: $${HOME}\n", env={"HOME": "/h"}) == {"a": "${HOME}"}
    assert parse_config_text("a: $HOME and $$\n", env={}) == {"a": "$HOME and $$"}
    with pytest.raises(ConfigError) as info:
        parse_config_text("a: ${DATA DIR}\n", env={})
    assert info.value.problems[0].startswith("<string>:1:4: malformed placeholder")


def test_env_is_expanded_in_comments_too() -> None:
    with pytest.raises(ConfigError, match="MISSING"):
        parse_config_text("# uses ${MISSING}\na: 1\n", env={})


# --------------------------------------------------------------------------- read and parse


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("workers:\n  - name: iii-state\n    config: [1, 2\n", source="c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("c.yaml:4:1: invalid YAML: ")


def test_yaml_tab_indentation_error() -> None:
    with pytest.raises(
        ConfigError, match=r"^invalid configuration:\n  - c\.yaml:2:1: invalid YAML"
    ):
        parse_config_text("a:\n\tb: 1\n", source="c.yaml")


@pytest.mark.parametrize(("text", "got"), [("- 1\n", "a list"), ("just text\n", "a string")])
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    with pytest.raises(ConfigError, match=f"the top level must be a mapping, got {got}"):
        parse_config_text(text)
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        validate_config([1])  # type: ignore[arg-type]


def test_empty_or_comment_only_file_is_an_empty_mapping() -> None:
    assert parse_config_text("") == {}
    assert parse_config_text("# nothing yet\n\n") == {}


def test_unsafe_yaml_tags_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_config_text("a: !!python/object/apply:os.getcwd []\n")


def test_read_config_text(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfworkers: []\n")  # a BOM is dropped
    assert read_config_text(path) == "workers: []\n"


def test_read_missing_unreadable_and_binary_files(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        read_config_text(missing)
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_text(tmp_path)  # a directory
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml: not UTF-8 text"):
        read_config_text(binary)


def test_steps_are_usable_separately() -> None:
    raw = parse_config_text("workers:\n  - name: iii-state\n    config: {typo: 1}\n")
    assert raw == {"workers": [{"name": "iii-state", "config": {"typo": 1}}]}  # not validated
    raw["workers"][0]["config"] = {"adapter": {"name": "kv", "config": {"file_path": "/x"}}}
    assert validate_config(raw).file_path == "/x"
    hand_built: dict[str, Any] = {"modules": [{"class": "modules::kv_server::KvServer"}]}
    assert validate_config(hand_built, source="api").kv_server is True


def test_load_config(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(kv("file_path: ${DIR:./data}"))
    c = load_config(path, env={"DIR": "/d"})
    assert (c.file_path, c.source) == ("/d", str(path))
    path.write_text(kv("store_method: file"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: workers[0].config.adapter.config.store_method: "
        "must be one of file_based, in_memory, got 'file' (did you mean 'file_based'?)"
    ]


def test_repository_config_yaml_loads() -> None:
    c = load_config(REPO / "config.yaml", env={})
    assert (c.store_method, c.file_path) == ("file_based", "./data")
    assert (c.adapter, c.server_host, c.server_port, c.kv_server) == (
        "kv",
        "127.0.0.1",
        49134,
        False,
    )
    assert (c.fsync, c.max_value_bytes, c.triggers_enabled) == ("always", None, True)


# --------------------------------------------------------------------------- validation rules

RULES = [
    # (file text, location, text of the problem)
    (
        kv("store_method: file"),
        "adapter.config.store_method",
        "must be one of file_based, in_memory, got 'file' (did you mean 'file_based'?)",
    ),
    (
        kv("store_method: 1"),
        "adapter.config.store_method",
        "must be one of file_based, in_memory, got an integer 1",
    ),
    (kv("file_path: ''"), "adapter.config.file_path", "must not be empty"),
    (kv("file_path: 7"), "adapter.config.file_path", "must be a string, got an integer 7"),
    (
        kv("save_interval_ms: 99"),
        "adapter.config.save_interval_ms",
        "must be between 100 and 3600000, got 99",
    ),
    (
        kv("save_interval_ms: 0"),
        "adapter.config.save_interval_ms",
        "must be between 100 and 3600000, got 0",
    ),
    (
        state("save_interval_ms: 3600001"),
        "save_interval_ms",
        "must be between 100 and 3600000, got 3600001",
    ),
    (
        state("save_interval_ms: 5000.0"),
        "save_interval_ms",
        "must be an integer, got a number 5000.0",
    ),
    (
        state("save_interval_ms: '5000'"),
        "save_interval_ms",
        "must be an integer, got a string '5000'",
    ),
    (
        state("max_value_bytes: 0"),
        "max_value_bytes",
        "must be >= 1, got 0 (omit it or use null for no limit)",
    ),
    (state("max_value_bytes: true"), "max_value_bytes", "must be an integer, got a boolean True"),
    (
        state("triggers_enabled: 'true'"),
        "triggers_enabled",
        "must be true or false, got a string 'true'",
    ),
    (state("triggers_enabled: 1"), "triggers_enabled", "must be true or false, got an integer 1"),
    (state("fsync: sometimes"), "fsync", "must be one of always, interval, never, got 'sometimes'"),
    (state("fsync: true"), "fsync", "must be one of always, interval, never, got a boolean True"),
    (state("fsync_interval_ms: 0"), "fsync_interval_ms", "must be between 1 and 60000, got 0"),
    (
        state("fsync_interval_ms: 60001"),
        "fsync_interval_ms",
        "must be between 1 and 60000, got 60001",
    ),
    (
        state("segment_size_bytes: 4095"),
        "segment_size_bytes",
        "must be between 4096 and 1073741824, got 4095",
    ),
    (
        state("segment_size_bytes: 1073741825"),
        "segment_size_bytes",
        "must be between 4096 and 1073741824, got 1073741825",
    ),
    (state("adapter: kv"), "adapter", "must be a mapping, got a string 'kv'"),
    (state("adapter: {config: {}}"), "adapter", "missing required key 'name'"),
    (state("adapter: {name: 3}"), "adapter.name", "must be a string, got an integer 3"),
    (state("adapter: {name: kv, config: [1]}"), "adapter.config", "must be a mapping, got a list"),
    (
        state("adapter: {name: kv, extra: 1}"),
        "adapter.extra",
        "unknown key (expected one of: name, config)",
    ),
    (
        state("adapter: {name: redis, config: {redis_url: 'http://x'}}"),
        "adapter.config.redis_url",
        "must start with redis://, rediss://, unix://, got 'http://x'",
    ),
    (
        state("adapter: {name: redis, config: {file_path: ./data}}"),
        "adapter.config.file_path",
        "unknown key here: file_path is a key of the kv adapter; the redis adapter takes only "
        "redis_url",
    ),
    (
        state("adapter: {name: redis, config: {fsync: never}}"),
        "adapter.config.fsync",
        "unknown key here: fsync is an option of the state block: put it beside 'adapter'",
    ),
    (
        state("adapter: {name: bridge, config: {bridge_url: 'ws://x'}}"),
        "adapter.name",
        "the bridge adapter is not available in this version",
    ),
    (
        state("adapter: {name: kvv}"),
        "adapter.name",
        "must be one of kv, redis, bridge, got 'kvv' (did you mean 'kv'?)",
    ),
]


@pytest.mark.parametrize(("text", "where", "message"), RULES)
def test_validation_rule(text: str, where: str, message: str) -> None:
    assert problems(text) == [f"config.yaml: workers[0].config.{where}: {message}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 1", None),
        ("workers: {}", "config.yaml: workers: must be a list, got a mapping"),
        (
            "workers: [iii-state]",
            "config.yaml: workers[0]: must be a mapping, got a string 'iii-state'",
        ),
        ("workers: [{config: {}}]", "config.yaml: workers[0]: missing required key 'name'"),
        ("workers: [{name: [a]}]", "config.yaml: workers[0].name: must be a string, got a list"),
        (
            "workers: [{name: iii-state, config: 1}]",
            "config.yaml: workers[0].config: must be a mapping, got an integer 1",
        ),
        (
            "workers: [{name: iii-state, image: x}]",
            "config.yaml: workers[0].image: unknown key (expected one of: name, config)",
        ),
        (
            "registration_namespace_grace_ms: -1",
            "config.yaml: registration_namespace_grace_ms: must be >= 0, got -1",
        ),
        (
            "registration_namespace_grace_ms: 1.5",
            "config.yaml: registration_namespace_grace_ms: must be an integer, got a number 1.5",
        ),
        (
            "modules: [{class: modules::state::StateModule, config: {adapter: {name: kv}}}]",
            "config.yaml: modules[0].config.adapter.name: unknown key "
            "(expected one of: class, config)",
        ),
        (
            "workers: []\nmodules: []",
            "config.yaml: modules: cannot be combined with 'workers': use one form per file",
        ),
        ("worker: []", "config.yaml: worker: unknown key (did you mean 'workers'?)"),
        (
            "1: x",
            "config.yaml: 1: unknown key "
            "(expected one of: registration_namespace_grace_ms, workers, modules)",
        ),
    ],
)
def test_structure_rule(text: str, expected: str | None) -> None:
    if expected is None:  # "port" is not a top-level key evstate knows
        assert problems(text) == [
            "config.yaml: port: unknown key (expected one of: registration_namespace_grace_ms, "
            "workers, modules)"
        ]
    else:
        assert expected in problems(text)


def test_modules_form_adapter_classes() -> None:
    base = (
        "modules:\n  - class: modules::state::StateModule\n"
        "    config:\n      adapter: {class: %s}\n"
    )
    redis = cfg(base % "modules::state::adapters::RedisAdapter")
    assert (redis.adapter, redis.redis_url) == ("redis", "redis://127.0.0.1:6379/0")
    (problem,) = problems(base % "modules::state::adapters::KvStor")
    assert problem.startswith("config.yaml: modules[0].config.adapter.class: must be one of ")
    assert problem.endswith("(did you mean 'modules::state::adapters::KvStore'?)")


def test_redis_adapter_in_both_forms() -> None:
    workers = cfg(
        state(
            "max_value_bytes: 1000\nsave_interval_ms: 2000\n"
            "adapter: {name: redis, config: {redis_url: 'redis://cache:6380/2'}}"
        )
    )
    assert (workers.adapter, workers.redis_url) == ("redis", "redis://cache:6380/2")
    assert (workers.max_value_bytes, workers.save_interval_ms) == (1000, 2000)
    assert workers.adapter_config == {"redis_url": "redis://cache:6380/2"}
    assert workers.store_method == "file_based"  # the kv-only in_memory default does not apply
    modules = cfg(
        "modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n"
        "        class: modules::state::adapters::RedisAdapter\n"
        "        config: {redis_url: 'unix:///run/redis.sock'}\n"
    )
    assert (modules.adapter, modules.redis_url) == ("redis", "unix:///run/redis.sock")
    bare = cfg(state("adapter: {name: redis}"))
    assert (bare.adapter, bare.redis_url) == ("redis", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="redis_url: must start with"):
        Config(adapter="redis", redis_url="localhost:6379")


def test_kv_server_module_rules() -> None:
    text = (
        "modules:\n  - class: modules::kv_server::KvServer\n"
        "    config: {store_method: disk, fsync: never, index: x}\n"
    )
    assert problems(text) == [
        "config.yaml: modules[0].config.store_method: "
        "must be one of file_based, in_memory, got 'disk'",
        "config.yaml: modules[0].config.fsync: unknown key here: fsync is an option of the state "
        "block: put it beside 'adapter'",
        "config.yaml: modules[0].config.index: unknown key (expected one of: store_method, "
        "file_path, save_interval_ms)",
    ]


def test_worker_manager_rules() -> None:
    base = "workers:\n  - name: iii-worker-manager\n    config: %s\n"
    assert cfg(base % "{host: '::1', port: 1}").server_host == "::1"
    assert problems(base % "{port: 0, host: ''}") == [
        "config.yaml: workers[0].config.port: must be between 1 and 65535, got 0",
        "config.yaml: workers[0].config.host: must not be empty",
    ]
    assert problems(base % "{prot: 80}") == [
        "config.yaml: workers[0].config.prot: unknown key (did you mean 'port'?)"
    ]
    # Ignoring an auth block would leave the listener open: refused, with the reason.
    (problem,) = problems(base % "{rbac: {auth_function_id: a::b}}")
    assert problem.startswith("config.yaml: workers[0].config.rbac: unknown key here: ")
    assert "RBAC" in problem


def test_a_second_state_or_manager_block_is_refused() -> None:
    text = "workers:\n" + "  - name: iii-state\n  - name: iii-worker-manager\n" * 2
    assert problems(text) == [
        "config.yaml: workers[2]: 'iii-state' appears twice (first at workers[0]); "
        "evstate takes one",
        "config.yaml: workers[3]: 'iii-worker-manager' appears twice (first at workers[1]); "
        "evstate takes one",
    ]


def test_did_you_mean_for_state_keys() -> None:
    assert problems(state("triggers_enabledd: true")) == [
        "config.yaml: workers[0].config.triggers_enabledd: unknown key "
        "(did you mean 'triggers_enabled'?)"
    ]
    (far,) = problems(state("colour: blue"))
    assert far.startswith("config.yaml: workers[0].config.colour: unknown key (expected one of: ")
    assert "adapter" in far and "fsync_interval_ms" in far


def test_keys_one_level_off_get_a_precise_message() -> None:
    assert problems(state("store_method: file_based")) == [
        "config.yaml: workers[0].config.store_method: unknown key here: "
        "store_method belongs in adapter.config"
    ]
    assert problems(kv("fsync: never")) == [
        "config.yaml: workers[0].config.adapter.config.fsync: unknown key here: "
        "fsync is an option of the state block: put it beside 'adapter'"
    ]


def test_three_problems_are_all_reported_with_locations() -> None:
    text = """\
workers:
  - name: iii-http
  - name: iii-state
    config:
      triggers_enabledd: false
      adapter:
        name: kv
        config:
          store_method: file
          save_interval_ms: 10
"""
    assert problems(text) == [
        "config.yaml: workers[1].config.triggers_enabledd: unknown key "
        "(did you mean 'triggers_enabled'?)",
        "config.yaml: workers[1].config.adapter.config.store_method: must be one of file_based, "
        "in_memory, got 'file' (did you mean 'file_based'?)",
        "config.yaml: workers[1].config.adapter.config.save_interval_ms: must be between 100 and "
        "3600000, got 10",
    ]
    with pytest.raises(ConfigError) as info:
        cfg(text)
    assert str(info.value).count("\n  - ") == 3 and info.value.code == "config_error"
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- options and replace


def test_config_from_options() -> None:
    c = config_from_options(
        store_method="in_memory",
        file_path=pathlib.Path("rel/dir"),
        fsync="never",
        fsync_interval_ms=10,
        segment_size_bytes=8192,
        max_value_bytes=100,
        save_interval_ms=100,
        triggers_enabled=False,
    )
    assert c == Config(
        store_method="in_memory",
        file_path="rel/dir",
        fsync="never",
        fsync_interval_ms=10,
        segment_size_bytes=8192,
        max_value_bytes=100,
        save_interval_ms=100,
        triggers_enabled=False,
    )
    assert config_from_options() == Config()  # store_method defaults to file_based
    assert config_from_options(max_value_bytes=None).max_value_bytes is None


def test_config_from_options_collects_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_options(fsyn="always", fsync_interval_ms=True, file_path=b"/x", adapter="kv")
    assert info.value.problems == [
        "<options>: fsyn: unknown option (did you mean 'fsync'?)",
        "<options>: fsync_interval_ms: must be an integer, got a boolean True",
        "<options>: file_path: must be a string, got a bytes",
        "<options>: adapter: unknown option (expected one of: store_method, file_path, fsync, "
        "fsync_interval_ms, segment_size_bytes, max_value_bytes, save_interval_ms, "
        "triggers_enabled, retention, max_open_listings, listing_idle_ms)",
    ]


def test_replace_overrides_a_loaded_config_with_the_same_rules() -> None:
    loaded = cfg(III_WORKERS)
    changed = loaded.replace(fsync="interval", file_path="/elsewhere")
    assert (changed.fsync, changed.file_path) == ("interval", "/elsewhere")
    assert changed.source == "config.yaml" and changed.save_interval_ms == 2000
    assert changed.server_host == "0.0.0.0" and changed.max_value_bytes == 1048576
    assert loaded.fsync == "always"  # the original is untouched
    with pytest.raises(ConfigError, match="must be between 100 and 3600000, got 1"):
        loaded.replace(save_interval_ms=1)
    with pytest.raises(ConfigError, match="unknown option"):
        loaded.replace(server_port=1)


def test_config_is_frozen_hashable_and_always_valid() -> None:
    c = cfg(III_WORKERS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.fsync = "never"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.adapter_config["file_path"] = "/x"  # type: ignore[index]
    assert hash(c) == hash(cfg(III_WORKERS)) and c == cfg(III_WORKERS)
    with pytest.raises(ConfigError) as info:
        Config(fsync="x", server_port=0, adapter="bridge")  # type: ignore[arg-type]
    assert info.value.problems == [
        "Config.fsync: must be one of always, interval, never, got 'x'",
        "Config.adapter: must be one of kv, redis, got 'bridge'",
        "Config.server_port: must be between 1 and 65535, got 0",
    ]


def test_adapter_config_is_a_copy() -> None:
    raw = parse_config_text(kv("file_path: /a"))
    c = validate_config(raw)
    raw["workers"][0]["config"]["adapter"]["config"]["file_path"] = "/b"
    assert c.adapter_config["file_path"] == "/a"


def test_docs_cover_every_field() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    for f in dataclasses.fields(Config):
        assert f"`{f.name}`" in text, f.name


def test_docs_yaml_examples_are_valid() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2
    workers, modules = (cfg(block) for block in blocks)
    assert (workers.file_path, workers.server_host, workers.max_value_bytes) == (
        "./data",
        "127.0.0.1",
        1048576,
    )
    assert (modules.file_path, modules.save_interval_ms, modules.kv_server) == (
        "./data/state_store.db",
        5000,
        True,
    )
    assert (modules.fsync, modules.fsync_interval_ms) == ("interval", 100)
