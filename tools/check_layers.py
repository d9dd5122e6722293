#!/usr/bin/env python3
"""Check that evstate's imports follow its architecture (docs/architecture.md, "Layers").

The package is layered; a module may import only from its own layer or the layers below:

    interfaces   evstate.server.*, evstate.cli.*, evstate.__main__
    root         evstate (__init__), evstate.aio, evstate.testing
    backends     evstate.backends.<name>.*   (file, memory, follower, redis)
    core         evstate.core.*
    leaves       evstate.errors, values, config_schema, config, ops, ops_apply, events,
                 timings

with these rules on top:

- leaves import only lower-ranked leaves (``LEAF_RANKS``);
- a backend imports no other backend, except the pairs in ``BACKEND_EXCEPTIONS`` (each with
  the reason it is allowed);
- ``server`` and ``cli`` use the public API (``evstate``, ``evstate.aio``) and the core,
  never a backend module; ``cli`` may start the server, ``server`` never imports ``cli``;
- no two modules import each other, directly or in a ring (imports under
  ``if TYPE_CHECKING:`` do not count: they never run).

Run directly (exit 1 on violations) or through tests/test_layers.py.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "evstate"

LAYERS = {"leaves": 0, "core": 1, "backends": 2, "root": 3, "interfaces": 4}

# Leaves import only lower ranks among themselves.
LEAF_RANKS = {
    "errors": 0,
    "values": 1,
    "config_schema": 2,
    "config": 3,
    "ops": 2,
    "ops_apply": 3,
    "events": 2,
    "timings": 0,
}

# (importing backend, imported module prefix) -> why it is allowed.
BACKEND_EXCEPTIONS = {
    ("follower", "backends.file"): "a follower reads the file store's directory and format",
    ("memory", "backends.file.restore"): "restore_to() writes a file store directory",
    ("redis", "backends.file.restore"): "restore_to() writes a file store directory",
}

ROOT_MODULES = {"__init__", "aio", "testing"}


def module_name(path: Path) -> str:
    """``core.audit`` for evstate/core/audit.py; ``__init__`` for the package root."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    """The layer of a module name (see the module docstring)."""
    top = module.split(".")[0]
    if top in ("server", "cli", "__main__"):
        return "interfaces"
    if top in ROOT_MODULES:
        return "root"
    if top == "backends":
        return "backends"
    if top == "core":
        return "core"
    return "leaves"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imported_modules(path: Path) -> set[str]:
    """The evstate modules ``path`` imports (as :func:`module_name` names them)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module in ("evstate",) or node.module.startswith("evstate."):
                # "from evstate.cli import audit" imports the submodule evstate.cli.audit
                names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "evstate":
                found.add("__init__")
            elif name.startswith("evstate."):
                found.add(name[len("evstate.") :])
    return {name for name in found if _exists(name)}


def _exists(name: str) -> bool:
    if name == "__init__":
        return True
    base = PACKAGE.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _backend(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "backends" and len(parts) > 1 else None


def check_import(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    if target == module or (module.startswith(target + ".") and target != "__init__"):
        return None  # a package's own modules and its __init__
    mine, theirs = layer(module), layer(target)
    if LAYERS[theirs] > LAYERS[mine]:
        return f"{module} ({mine}) imports {target} ({theirs}): imports go down only"
    if mine == "leaves" and theirs == "leaves":
        a, b = LEAF_RANKS.get(module), LEAF_RANKS.get(target)
        if a is None or b is None:
            return f"{module} or {target}: no rank in LEAF_RANKS (tools/check_layers.py)"
        if b >= a:
            return f"{module} (rank {a}) imports {target} (rank {b})"
    if mine == "backends" and theirs == "backends":
        a, b = _backend(module), _backend(target)
        if a != b and not any(
            a == who and target.startswith(what) for who, what in BACKEND_EXCEPTIONS
        ):
            return f"backend {a} imports backend {b} ({target}) without a named exception"
    if mine == "interfaces" and theirs == "backends":
        return f"{module} imports the backend module {target}: use the public API"
    if mine == "interfaces" and module.startswith("server") and target.startswith("cli"):
        return f"{module} imports {target}: the server never imports the CLI"
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations() -> list[str]:
    """Every import that breaks a rule of the module docstring."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        targets = imported_modules(path)
        # A package __init__ that re-exports its own modules is the package's face, not a
        # cycle with them.
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
        for target in sorted(targets):
            problem = check_import(module, target)
            if problem:
                problems.append(problem)
    for ring in _cycles(graph):
        problems.append("import cycle: " + " -> ".join(ring))
    return problems


if __name__ == "__main__":
    found = violations()
    print("\n".join(found) or "layers ok")
    sys.exit(1 if found else 0)
