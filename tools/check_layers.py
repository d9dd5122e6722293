#!/usr/bin/env python3
"""Check that evstate's modules import downwards only (docs/architecture.md, "Layers").

Each module has a rank; a module may import only modules of a strictly lower rank.
Run directly (exit 1 on violations) or through tests/test_layers.py.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "evstate"

# Lower = closer to the leaves. Interfaces > facade > engine/log > leaves.
RANKS: dict[str, int] = {
    "errors": 0,
    "values": 1,
    "config": 1,
    "diskio": 1,
    "ops": 2,
    "events": 2,
    "segment": 2,
    "engine": 3,
    "log": 3,
    "snapshot": 3,
    "history": 3,
    "view": 3,
    "timeline": 4,
    "follower_log": 4.2,
    "follower_history": 4.4,
    "follower_state": 4.6,
    "follower_cursors": 1.5,
    "follower_triggers": 5.2,
    "follower_audit": 6.4,
    "follower": 6.5,
    "functions": 4,
    "store_history": 5,
    "triggers": 5,
    "store_triggers": 5.5,
    "store": 6,
    # the redis adapter (docs/scaling.md)
    "redis_scripts": 1,
    "redis_client": 1.5,
    "redis_writes": 2.5,
    "redis_log": 3.5,
    "redis_trigger_admin": 5.1,
    "redis_triggers": 5.2,
    "redis_history": 5.3,
    "redis_store": 6,
    "testing": 6.5,  # evstate.testing: fault-injecting DiskIO for users' tests
    "__init__": 7,
    "aio": 8,
    "cli": 8,
    "cli_common": 7.6,
    "cli_state": 7.7,
    "cli_audit": 7.7,
    "cli_recovery": 7.7,
    "cli_triggers": 7.7,
    "cli_serve": 7.9,
    "server_protocol": 7.1,
    "server_kv": 7.1,
    "server_lanes": 7.1,
    "server_triggers": 7.2,
    "server_router": 7.3,
    "server_wire": 7.2,
    "server_conn": 7.4,
    "server": 7.5,
    "__main__": 9,
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "evstate":
                found.add("__init__")
            elif name.startswith("evstate."):
                found.add(name.split(".")[1])
    return found


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.glob("*.py")):
        module = path.stem
        if module not in RANKS:
            problems.append(f"{module}: no rank in tools/check_layers.py; give it one")
            continue
        for target in sorted(imported_modules(path)):
            if target not in RANKS:
                problems.append(f"{module} imports unranked {target}")
            elif RANKS[target] >= RANKS[module]:
                problems.append(
                    f"{module} (rank {RANKS[module]}) imports {target} (rank {RANKS[target]})"
                )
    return problems


if __name__ == "__main__":
    found = violations()
    print("\n".join(found) or "layers ok")
    sys.exit(1 if found else 0)
