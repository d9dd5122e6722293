"""The ``UPDATE`` fast path (ops applied inside Redis): coverage, declines, semantics kept.

The op matrix of tests/unit/test_ops.py runs every case through both engines; these tests add
what the matrix cannot show: which ops the fast path takes, that what it declines falls back
with nothing written, stored texts it must refuse, TTL and retry semantics, the function
library's life cycle, and exact counts under concurrency with the Python path mixed in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evstate
from evstate import UpdateOp
from evstate.backends.redis.client import BackendUnavailableError, dump_value
from evstate.backends.redis.scripts import TTL, ttl_member
from evstate.backends.redis.store import RedisStore, open_redis
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from tests.redis.op_engines import SCOPE, FastPathEngine, current_case
from tests.redis.server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
Open = Callable[..., RedisStore]
MISSING = object()
MANY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
inc, dec, set_, merge = UpdateOp.increment, UpdateOp.decrement, UpdateOp.set, UpdateOp.merge
append, remove = UpdateOp.append, UpdateOp.remove


@pytest.fixture
def engine(redis_url: str) -> Iterator[FastPathEngine]:
    """The fast path on database 1: its raw writes stay out of the stores' database 0."""
    fast = FastPathEngine(redis_url.rsplit("/", 1)[0] + "/1")
    yield fast
    fast.close()


def outcome(engine: FastPathEngine, old: Any, ops: list[Any]) -> str:
    """Run ``ops`` on ``old`` through the script (checked against Python); fast/declined."""
    parsed = parse_ops(ops)
    if old is MISSING:
        new, errors = apply_update_ops({}, parsed, missing=True)
        text = None
    else:
        text = old if isinstance(old, bytes) else dump_value(old)
        new, errors = apply_update_ops(json.loads(text), parsed, missing=False)
    engine.check(text, parsed, new, errors)
    return engine.outcomes[current_case()][-1]


# --------------------------------------------------------------------------- what is taken

COMMON = [
    ("increment", {"n": 41}, [inc("n", 1)]),
    ("increment-missing-key", MISSING, [inc("n", 1)]),
    ("increment-missing-field", {"a": "x"}, [inc("n", 5), dec("m", 2)]),
    ("increment-negative", {"n": -5}, [inc("n", -3), dec("n", 10)]),
    ("decrement-to-zero", {"n": 3}, [dec("n", 3)]),
    ("increment-near-2^53", {"n": 2**53 - 2}, [inc("n", 1)]),
    ("increment-root", 7, [inc("", 3)]),
    ("set-top-level", {"a": 1}, [set_("b", {"x": [1, "two", None]}), set_("a", "new")]),
    ("set-root", {"a": 1}, [set_("", [1, 2])]),
    ("set-nested-by-merge", {"user": {"name": "A"}}, [merge(["user", "address"], {"city": "B"})]),
    ("set-float-value", {}, [set_("f", 0.1), set_("g", 1e16), set_("h", -2.5e-9)]),
    ("remove", {"a": 1, "b": 2, "c": 3}, [remove("b"), remove("zzz")]),
    ("remove-root", {"a": 1}, [remove("")]),
    ("merge-root", {"a": 1, "b": {"x": 1}}, [merge(None, {"b": {"y": 2}, "c": 3})]),
    ("merge-nested-replaces", {"a": [1]}, [merge(["a", "b"], {"c": True})]),
    ("append-array", {"log": ["a"]}, [append("log", "b"), append("log", {"k": [1]})]),
    ("append-string", {"t": "héllo"}, [append("t", " wörld\n")]),
    ("append-nested", {"e": {}}, [append(["e", "buf"], "x"), append(["e", "buf"], "y")]),
    ("append-root", MISSING, [append(None, "s"), append(None, "t")]),
    ("errors", {"s": "x", "o": {}}, [inc("s", 1), append("o", 1), set_("__proto__", 1)]),
    ("unicode-keys", {"é": 1, "😀": [1]}, [inc("é", 1), append("😀", "ü"), set_('q"\\', 1)]),
    ("control-chars", {"a\n": "\x00\x1f\x7f"}, [append("a\n", "\t\b\f\r"), inc("\x01", 1)]),
    ("big-integers-untouched", {"big": 2**64 - 1, "n": 1}, [inc("n", 1)]),
    ("canonical-floats-untouched", {"f": 0.5, "g": -0.0, "h": 123.25, "n": 1}, [inc("n", 1)]),
    ("empty-ops", {"a": [{}, []]}, []),
    ("key-order", {"z": 1, "a": 2, "m": 3}, [remove("a"), set_("a", 4), set_("z", 5)]),
]


@pytest.mark.parametrize(("old", "ops"), [c[1:] for c in COMMON], ids=[c[0] for c in COMMON])
def test_common_updates_take_the_fast_path(engine: FastPathEngine, old: Any, ops: Any) -> None:
    assert outcome(engine, old, ops) == "fast"


DECLINED = [
    ("float-arithmetic", {"f": 1.5}, [inc("f", 1)], "float arithmetic"),
    ("big-integer", {"n": 2**53}, [inc("n", 1)], "big integer"),
    ("result-beyond-2^53", {"n": 2**53 - 1}, [inc("n", 1)], "big integer"),
    ("negative-beyond-2^53", {"n": -(2**53) + 1}, [dec("n", 1)], "big integer"),
    ("huge-by", {"n": 1}, [inc("n", 2**53)], "plan"),
    ("whitespace", b'{"n": 1}', [inc("n", 1)], "text"),
    ("escaped-non-ascii", b'{"n":1,"s":"\\u00e9"}', [inc("n", 1)], "text"),
    ("escaped-slash", b'{"n":1,"s":"a\\/b"}', [inc("n", 1)], "text"),
    ("upper-case-hex", b'{"n":1,"s":"\\u001F"}', [inc("n", 1)], "text"),
    ("long-escape", b'{"n":1,"s":"\\u000a"}', [inc("n", 1)], "text"),
    ("duplicate-keys", b'{"n":1,"n":2}', [inc("n", 1)], "text"),
    ("minus-zero", b'{"n":-0}', [inc("n", 1)], "text"),
    ("large", {"n": 1, "t": "x" * 4096}, [inc("n", 1)], "large"),
    ("large-op-value", {"n": 1}, [set_("t", "x" * 4096)], "plan"),
    ("leading-zero", b'{"n":1,"m":[1.50]}', [inc("n", 1)], "float"),
    ("exponent", b'{"n":1,"f":1e16}', [inc("n", 1)], "float"),
    ("serde-float", b'{"n":1,"f":1e+16}', [inc("n", 1)], "float"),
    ("17-digits", b'{"n":1,"f":0.30000000000000004}', [inc("n", 1)], "float"),
    ("small-float", b'{"n":1,"f":1e-05}', [inc("n", 1)], "float"),
    ("deep", dump_value({"n": 1, "d": json.loads("[" * 600 + "]" * 600)}), [inc("n", 1)], "deep"),
]


@pytest.mark.parametrize(
    ("old", "ops", "reason"), [c[1:] for c in DECLINED], ids=[c[0] for c in DECLINED]
)
def test_what_cannot_be_exact_is_declined_before_any_write(
    engine: FastPathEngine, old: Any, ops: Any, reason: str
) -> None:
    # FastPathEngine checks that nothing was written and the text it read came back.
    assert outcome(engine, old, ops) == f"declined: {reason}"


def test_invalid_texts_are_declined(engine: FastPathEngine) -> None:
    for text in [
        b'{"s":"\xff"}',  # not UTF-8
        b'{"s":"\xed\xa0\x80"}',  # a surrogate
        b'{"s":"\xc0\xaf"}',  # overlong
        b'{"s":"\xf4\x90"}',  # beyond U+10FFFF, cut short
        b'{"n":01}',
        b'{"n":1',
        b'{"n":1}x',
        b"",
        b"nul",
        b'"\x01"',
    ]:
        key = f"bad{text!r}"
        engine.client.hset(f"state:{SCOPE}", key, text)
        assert engine.run(key, text, parse_ops([inc("n", 1)]))[0] == "text"


def test_a_declined_update_finishes_in_python(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("s", "k", {"f": 1.5, "n": 1})
    assert store.update("s", "k", [inc("f", 1), inc("n", 1)]) == {
        "old_value": {"f": 1.5, "n": 1},
        "new_value": {"f": 2.5, "n": 2},
    }
    raw = redis.Redis.from_url(redis_url)
    raw.hset("state:s", "iii", b'{"n": 1, "s": "\\u00e9"}')  # as another writer spelled it
    assert store.update("s", "iii", [inc("n", 1)])["new_value"] == {"n": 2, "s": "é"}
    assert raw.hget("state:s", "iii") == dump_value({"n": 2, "s": "é"})


# --------------------------------------------------------------------------- stored spellings


def fixed(x: float) -> str:
    """The shortest digits of ``x`` in fixed notation (``1e-05`` -> ``0.00001``)."""
    text = format(Decimal(repr(x)), "f")
    return text if "." in text else text + ".0"


SPELLINGS: list[Callable[[float], str]] = [
    repr,
    fixed,
    lambda x: f"{x:.17g}",
    lambda x: f"{x:.16g}",
    lambda x: f"{x:.15g}",
    lambda x: f"{x:.6f}",
    lambda x: f"{x:e}",
    lambda x: repr(x) + "0" if "e" not in repr(x) else repr(x),
]


EDGE_FLOATS = [
    0.0, -0.0, 0.1, 2.5, -1.25, 100.0, 1e-4, 1.5e-4, 1e-5, 1.5e-5, 0.30000000000000004,
    123456789012345.6, 1234567890123456.0, 1e15, 1e16, 9999999999999998.0, 2.0**53, 5e-324,
    1.7976931348623157e308, 1.0000000000000002, 0.1 + 0.7, 1 / 3,
]  # fmt: skip


# Their repr is fixed notation with at most 15 significant digits: they pass through.
PASSING_FLOATS = {0.0, -0.0, 0.1, 2.5, -1.25, 100.0, 1e-4, 1.5e-4, 1e15}


@pytest.mark.parametrize("spelling", range(len(SPELLINGS)))
@pytest.mark.parametrize("x", EDGE_FLOATS, ids=repr)
def test_stored_float_edges(engine: FastPathEngine, x: float, spelling: int) -> None:
    result = check_float_spelling(engine, SPELLINGS[spelling](x))
    if SPELLINGS[spelling] is repr:
        assert (result == "fast") == (x in PASSING_FLOATS)  # -0.0 == 0.0: both pass


@MANY
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(range(len(SPELLINGS))))
def test_a_stored_float_passes_through_only_in_python_spelling(
    engine: FastPathEngine, x: float, spelling: int
) -> None:
    check_float_spelling(engine, SPELLINGS[spelling](x))


def check_float_spelling(engine: FastPathEngine, token: str) -> str:
    """Update a text holding the float ``token``: fast only if Python spells it so."""
    try:
        value = json.loads(token)
    except ValueError:
        return "invalid"
    if not isinstance(value, float):
        return "not a float"
    text = b'{"f":' + token.encode() + b',"n":1}'
    # Fast only if the text stays byte-identical to Python's output (engine.check asserts it).
    result = outcome(engine, text, [inc("n", 1)])
    if result == "fast":
        assert token == repr(value)
    return result


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
ENCODERS: list[Callable[[Any], bytes]] = [
    dump_value,
    lambda v: json.dumps(v).encode(),
    lambda v: json.dumps(v, separators=(",", ":")).encode(),
    lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode(),
]
some_ops = st.lists(
    st.one_of(
        st.builds(UpdateOp.increment, st.sampled_from(["n", "", "a"]), st.integers(-5, 5)),
        st.builds(UpdateOp.set, st.sampled_from(["n", "", "a"]), json_values),
        st.builds(UpdateOp.append, st.sampled_from([None, "a", ["a", "b"]]), json_values),
        st.builds(UpdateOp.remove, st.sampled_from(["n", "a"])),
    ),
    max_size=4,
)


@MANY
@given(json_values, st.sampled_from(range(len(ENCODERS))), some_ops)
def test_any_stored_text_is_updated_exactly_or_declined(
    engine: FastPathEngine, value: Any, encoder: int, ops: list[UpdateOp]
) -> None:
    outcome(engine, ENCODERS[encoder](value), ops)  # engine.check asserts the invariant


# --------------------------------------------------------------------------- semantics kept


def _entries(raw: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in raw.xrange("evstate:log")]


def test_time_to_live_is_kept(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("s", "k", {"n": 1}, ttl_ms=60_000)
    raw = redis.Redis.from_url(redis_url)
    deadline = raw.zscore(TTL, ttl_member("s", "k"))
    assert deadline is not None
    assert store.update("s", "k", [inc("n", 1)])["new_value"] == {"n": 2}
    assert raw.zscore(TTL, ttl_member("s", "k")) == deadline
    last = _entries(raw)[-1]
    assert (last[b"type"], last[b"new"], last[b"expires"]) == (
        b"updated",
        b'{"n":2}',
        b"%d" % deadline,
    )
    store.set("s", "plain", {"n": 1})
    store.update("s", "plain", [inc("n", 1)])
    assert raw.zscore(TTL, ttl_member("s", "plain")) is None
    assert b"expires" not in _entries(raw)[-1]


@pytest.mark.parametrize("path", ["fast", "python"])
def test_a_key_past_its_deadline_is_missing_and_expires_first(
    engine: FastPathEngine, redis_url: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    raw = engine.client
    raw.hset("state:s", "k", b'{"n":5}')
    raw.zadd(TTL, {ttl_member("s", "k"): 1000})  # long past; no expirer runs here
    if path == "python":
        monkeypatch.setattr("evstate.backends.redis.writes.plan_update", lambda ops: None)
    done, new, errors = engine.writer.update("s", "k", parse_ops([inc("n", 1)]))
    assert (new, errors, done.olds) == (b'{"n":1}', [], [None])
    expired, created = _entries(raw)
    assert expired == {
        b"ts": expired[b"ts"],
        b"type": b"deleted",
        b"scope": b"s",
        b"key": b"k",
        b"old": b'{"n":5}',
        b"reason": b"expired",
    }
    assert created == {
        b"ts": expired[b"ts"],
        b"type": b"created",
        b"scope": b"s",
        b"key": b"k",
        b"new": b'{"n":1}',
    }
    assert raw.zscore(TTL, ttl_member("s", "k")) is None
    assert raw.hget("evstate:meta", "revision") == b"2"


def test_a_retried_update_is_applied_once(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("s", "k", {"n": 1, "s": "x"})
    backend = store._backend
    real = backend._send
    lost: list[bytes] = []

    def reply_lost(client: Any, packed: bytes) -> Any:
        reply = real(client, packed)
        if not lost:  # the script ran, but the connection drops before its reply arrives
            lost.append(packed)
            raise redis.ConnectionError("connection reset")
        return reply

    backend._send = reply_lost  # type: ignore[method-assign]
    result = store.update("s", "k", [inc("n", 1), inc("s", 1)])
    assert lost
    assert result["old_value"] == {"n": 1, "s": "x"}
    assert result["new_value"] == {"n": 2, "s": "x"}
    assert [e["code"] for e in result["errors"]] == ["increment.not_number"]
    assert store.get("s", "k") == {"n": 2, "s": "x"}
    assert store.revision == 2
    assert store.verify() == []


def test_a_failing_update_writes_nothing(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("ok", "k", 1)
    redis.Redis.from_url(redis_url).set("state:broken", "a string, not a hash")
    with pytest.raises(evstate.StorageError, match="WRONGTYPE"):
        store.update("broken", "k", [inc("n", 1)])
    assert store.revision == 1


# --------------------------------------------------------------------------- the function library


def test_the_library_is_loaded_again_when_gone(open_store: Open, redis_url: str) -> None:
    store = open_store()
    assert store.update("s", "k", [inc("n", 1)])["new_value"] == {"n": 1}
    redis.Redis.from_url(redis_url).function_flush()
    assert store.update("s", "k", [inc("n", 1)])["new_value"] == {"n": 2}
    assert store._backend._functions


def test_updates_carry_on_after_redis_restarts(own_server: RedisServer) -> None:
    """Each thread's own connection reconnects; the library survives in the AOF."""
    with open_redis(own_server.url) as store:
        acked = 0
        for _ in range(50):
            store.update("s", "k", [inc("n", 1)])
            acked += 1
        own_server.restart(kill=True)
        deadline = time.monotonic() + 30
        while acked < 100 and time.monotonic() < deadline:
            try:
                store.update("s", "k", [inc("n", 1)])
                acked += 1
            except BackendUnavailableError:
                time.sleep(0.05)
        assert store.get("s", "k") == {"n": acked} == {"n": 100}
        assert store._backend._functions
        assert store.verify() == []


@pytest.mark.parametrize("denied", ["-function", "-fcall"])
def test_a_server_refusing_functions_gets_the_script(
    redis_url: str, redis_server: Any, denied: str
) -> None:
    admin = redis_server.client()
    admin.function_flush()
    admin.acl_setuser(
        "nofunctions",
        enabled=True,
        nopass=True,
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=[denied],
    )
    url = f"redis://nofunctions@127.0.0.1:{redis_server.port}/0"
    try:
        with open_redis(url) as store:
            assert store.update("s", "k", [inc("n", 1)])["new_value"] == {"n": 1}
            assert store.update("s", "k", [inc("n", 2)])["new_value"] == {"n": 3}
            assert not store._backend._functions
            assert store.verify() == []
    finally:
        admin.acl_deluser("nofunctions")


def test_the_script_form_gives_the_same_results(engine: FastPathEngine) -> None:
    engine.backend._functions = False
    for _, old, ops in COMMON:
        assert outcome(engine, old, ops) == "fast"


# --------------------------------------------------------------------------- concurrency


def _spawn(url: str, n: int, ops: list[UpdateOp]) -> subprocess.Popen[str]:
    wire = json.dumps([op.to_dict() for op in ops])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.redis.worker", url, "update", str(n), wire],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_four_processes_fast_and_python_paths_mixed_lose_no_update(
    open_store: Open, redis_url: str, engine: FastPathEngine
) -> None:
    n = 300
    fast_ops, slow_ops = [inc("n", 1)], [inc("n", 1), inc("f", 1)]
    store = open_store()
    store.set("counters", "c", {"n": 0, "f": 0.5})
    # The first kind runs in Redis, the second falls back (float arithmetic) to Python.
    assert outcome(engine, {"n": 0, "f": 0.5}, fast_ops) == "fast"
    assert outcome(engine, {"n": 0, "f": 0.5}, slow_ops) == "declined: float arithmetic"
    base = store.revision
    procs = [_spawn(redis_url, n, ops) for ops in (fast_ops, slow_ops, fast_ops, slow_ops)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"
            assert proc.wait(timeout=120) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
    assert store.get("counters", "c") == {"n": 4 * n, "f": 0.5 + 2 * n}
    updates = [e for e in store.history("counters", "c") if e.old_value is not None]
    assert [e.new_value["n"] for e in updates] == list(range(1, 4 * n + 1))
    assert store.revision == base + 4 * n
    assert store.verify() == []


# --------------------------------------------------------------------------- the matrix


def test_the_op_matrix_runs_on_both_engines(tmp_path: Path) -> None:
    """tests/unit/test_ops.py: every case under [python] and [redis]; the fast path's share."""
    report = tmp_path / "matrix.json"
    env = {**os.environ, "EVSTATE_OPS_MATRIX_REPORT": str(report), "EVSTATE_REQUIRE_REDIS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_ops.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "\n726 passed" in done.stdout, done.stdout[-500:]
    found = json.loads(report.read_text())
    summary, cases = found["summary"], found["cases"]
    assert summary["cases_applying_ops"] >= 250
    assert summary["cases_all_fast"] >= 241  # all but the float and i64/u64-bound cases
    assert summary["calls_fast"] >= 0.75 * summary["calls"]  # random values included
    assert set(summary["decline_reasons"]) <= {"float", "float arithmetic", "big integer", "plan"}
    for name in [
        "test_reference_worked_example[redis-missing-increment]",
        "test_reference_worked_example[redis-increment-mixed]",
        "test_reference_worked_example[redis-merge-nested]",
        "test_reference_worked_example[redis-append-concat]",
        "test_set_adds_or_overwrites_a_first_level_key[redis]",
        "test_remove_deletes_a_present_key_and_ignores_an_absent_one[redis]",
        "test_merge_nested_shallowly_merges_into_existing_object[redis]",
        "test_append_nested_pushes_to_an_existing_array[redis]",
        "test_increment_and_decrement_default_by_is_one[redis]",
    ]:
        assert set(cases[f"tests/unit/test_ops.py::{name}"]) == {"fast"}, name
