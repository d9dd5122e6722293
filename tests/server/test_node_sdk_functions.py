"""The iii state worker's functions and ``evstate::batch`` through the real Node iii SDK.

``tests/server/node/worker_functions.mjs`` runs on ``iii-sdk@0.22.1`` (installed as
test_node_sdk.py describes) against a server over a file store.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.server.harness import Served
from tests.server.test_node_sdk import run_node_script


def test_node_sdk_worker_functions(make_server: Callable[..., Served]) -> None:
    served = make_server(file=True)
    out = run_node_script("worker_functions.mjs", served.url)
    assert out["casCreate"] == {"swapped": True}
    assert out["casMiss"] == {"swapped": False, "current": {"by": "node"}}
    assert out["casSwap"] == {"swapped": True}
    assert out["keys"] == {"keys": ["a", "b", "lock", "ü"]}
    entries = [entry for page in out["pages"] for entry in page["entries"]]
    # deleted after the first page, still listed: every page reads the first page's state
    assert entries == [["a", "a"], ["b", "b"], ["lock", 2], ["ü", "ü"]]
    assert [page["offset"] for page in out["pages"]] == [0, 2]
    assert out["pages"][-1]["done"] and out["pages"][-1]["next_cursor"] is None
    assert out["reused"]["code"] == "INVALID_CURSOR"
    assert out["badLimit"]["code"] == "INVALID_PAGE_LIMITS"
    assert [r["new_value"] for r in out["batch"]["results"]] == [1, 2]
    assert out["batchFailed"]["code"] == "CAS_FAILED"
    assert served.store.get("n", "x") == 2
