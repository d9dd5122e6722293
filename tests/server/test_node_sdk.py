"""The real Node iii SDK (``iii-sdk@0.22.1``, tests/server/node/) against the server.

The SDK is installed with npm into tests/server/node/node_modules (pinned by
package.json and package-lock.json). CI installs it beforehand with
``npm ci --prefix tests/server/node``; when node_modules is missing this test runs that
itself (bounded). It never skips: without node or npm, or when the install fails, it
fails and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import Served

NODE_DIR = Path(__file__).parent / "node"
INSTALL_TIMEOUT = 180


def ensure_node_sdk() -> str:
    """Return the node executable, installing the pinned SDK first if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are required for the Node SDK test (Node 18 or later); "
            "install them, then run: npm ci --prefix tests/server/node"
        )
    if not (NODE_DIR / "node_modules" / "iii-sdk" / "package.json").exists():
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {NODE_DIR} took over {INSTALL_TIMEOUT} s (network?)")
        if result.returncode != 0:
            pytest.fail(
                f"npm ci in {NODE_DIR} failed (network or registry unavailable?); run "
                f"`npm ci --prefix tests/server/node` before the tests.\n{result.stderr[-2000:]}"
            )
    installed = json.loads((NODE_DIR / "node_modules" / "iii-sdk" / "package.json").read_text())
    assert installed["version"] == "0.22.1", installed["version"]
    return node


def run_node_script(script: str, url: str) -> dict[str, Any]:
    """Run ``tests/server/node/<script>`` against ``url``; its last JSON line, parsed."""
    node = ensure_node_sdk()
    result = subprocess.run(
        [node, script, url],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out: dict[str, Any] = json.loads(
        [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    )
    return out


def test_node_sdk_state_and_trigger(server: Served) -> None:
    # OTel stays on: the Node SDK then also exercises /otel, which the server drains.
    out = run_node_script("client.mjs", server.url)
    assert out["set"] == {"old_value": None, "new_value": {"status": "new", "n": 1}}
    assert out["get"] == {"status": "new", "n": 1}
    assert out["getMissing"] == "undefined"  # no `result` key: the SDK resolves undefined
    assert out["update"] == {
        "old_value": {"status": "new", "n": 1},
        "new_value": {"status": "paid", "n": 3},
    }
    assert out["list"] == [{"status": "paid", "n": 3}]
    assert out["groups"] == {"groups": ["node-orders"]}
    assert out["error"]["code"] == "function_not_found"
    assert [(e["event"]["event_type"], e["metadata"]) for e in out["events"]] == [
        ("state:created", {"from": "node"}),
        ("state:updated", {"from": "node"}),
    ]
    assert out["events"][1]["event"] == {
        "type": "state",
        "event_type": "state:updated",
        "scope": "node-orders",
        "key": "o1",
        "old_value": {"status": "new", "n": 1},
        "new_value": {"status": "paid", "n": 3},
    }
    assert server.store.get("node-orders", "o1") == {"status": "paid", "n": 3}
