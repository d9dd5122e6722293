"""The second op engine for the op matrix: the redis adapter's ``UPDATE`` script (fast path).

``tests/unit/test_ops.py`` runs every case once with the Python engine alone and once with
this engine beside it: each ``apply_update_ops`` call of a case is also run through the
script, on a real redis-server, starting from the same value (stored as the JSON text every
evstate writer stores). When the script takes the fast path, its result must equal the
Python engine's exactly: the same stored text byte for byte (so the same value, key order and
number spelling) and the same error list. When it declines, it must have written nothing.

Which cases took the fast path and which declined (and why) is recorded per case; set
``EVSTATE_OPS_MATRIX_REPORT=<path>`` to get it as JSON (tests/redis/test_update_fast_path.py
reads it to check the fast path's coverage).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter, defaultdict
from typing import Any

import redis

from evstate.backends.redis.client import Backend, dump_value
from evstate.backends.redis.scripts import META, state_key
from evstate.backends.redis.update_plan import plan_update
from evstate.backends.redis.writes import Writer
from evstate.ops import ParsedOp

SCOPE = "matrix"
REPORT_ENV = "EVSTATE_OPS_MATRIX_REPORT"


def current_case() -> str:
    """The node id of the running test (pytest keeps it in the environment)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]


class FastPathEngine:
    """Runs parsed ops through the ``UPDATE`` script and compares with the Python result."""

    def __init__(self, url: str) -> None:
        self.backend = Backend(url)
        self.writer = Writer(self.backend)
        self.client = redis.Redis.from_url(url)
        self._keys = itertools.count()
        # case node id -> one outcome per apply call: "fast" or "declined: <reason>"
        self.outcomes: dict[str, list[str]] = defaultdict(list)

    def close(self) -> None:
        self.client.close()
        self.backend.close()

    def check(
        self,
        old_text: bytes | None,
        ops: list[ParsedOp],
        new_value: Any,
        errors: list[dict[str, Any]],
    ) -> None:
        """Run ``ops`` on ``old_text`` (``None``: missing) in Redis; assert it agrees."""
        key = f"k{next(self._keys)}"
        if old_text is not None:
            self.client.hset(state_key(SCOPE), key, old_text)
        declined, fast_errors = self.run(key, old_text, ops)
        if declined:
            self.outcomes[current_case()].append(f"declined: {declined}")
            return
        self.outcomes[current_case()].append("fast")
        stored = self.client.hget(state_key(SCOPE), key)
        assert stored == dump_value(new_value), (old_text, ops)
        assert fast_errors == errors, (old_text, ops)

    def run(
        self, key: str, old_text: bytes | None, ops: list[ParsedOp]
    ) -> tuple[str, list[dict[str, Any]]]:
        """Apply ``ops`` with the script: ``("", errors)``, or ``(why it declined, [])``."""
        plan = plan_update(ops)
        if plan is None:
            return "plan", []
        revision = self.client.hget(META, "revision")
        fast = self.writer.update_fast(SCOPE, key, plan)
        if fast.status == "fallback":
            # Declined before writing anything, with the text it read.
            assert fast.old == old_text
            assert self.client.hget(state_key(SCOPE), key) == old_text
            assert self.client.hget(META, "revision") == revision
            return fast.reason, []
        assert fast.status == "ok", fast
        assert fast.old == old_text
        return "", fast.errors

    def summary(self) -> dict[str, Any]:
        """Counts over the recorded cases and apply calls."""
        calls = [o for outcomes in self.outcomes.values() for o in outcomes]
        reasons = Counter(o.split(": ", 1)[1] for o in calls if o != "fast")
        all_fast = [case for case, outs in self.outcomes.items() if set(outs) == {"fast"}]
        return {
            "cases_applying_ops": len(self.outcomes),
            "cases_all_fast": len(all_fast),
            "cases_with_a_decline": len(self.outcomes) - len(all_fast),
            "calls": len(calls),
            "calls_fast": calls.count("fast"),
            "calls_declined": len(calls) - calls.count("fast"),
            "decline_reasons": dict(reasons),
        }

    def report(self) -> str:
        """Write the JSON report if asked (``EVSTATE_OPS_MATRIX_REPORT``); return a summary."""
        summary = self.summary()
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump({"summary": summary, "cases": self.outcomes}, out, indent=1)
        return (
            f"op matrix on the redis fast path: {summary['cases_applying_ops']} cases applied "
            f"ops, {summary['cases_all_fast']} entirely on the fast path; "
            f"{summary['calls_fast']} of {summary['calls']} applications fast, declined: "
            f"{summary['decline_reasons']}"
        )
