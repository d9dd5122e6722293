"""Every module says what it exports, and the exception tree in errors.py is the real one."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import evstate
from evstate import errors

PACKAGE = Path(evstate.__file__).resolve().parent
MODULES = sorted(
    ".".join(("evstate", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)


def _defined_here(path: Path) -> set[str]:
    """Public classes, functions and constants a module defines itself (not imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") and n not in ("log", "T")}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_lists_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    path = Path(inspect.getfile(module))
    exported = getattr(module, "__all__", None)
    if path.name == "__init__.py" and exported is None:
        return  # a package face with nothing of its own to export
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}: a name is listed twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"
    unlisted = sorted(_defined_here(path) - set(exported))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_the_exception_tree_in_the_errors_docstring_is_the_real_one() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, tuple[str, str]] = {}  # class -> (parent, code)
    parents: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(
            r"^(\s*)(?:[│ ]*[├└]── )?(\w+Error|Error)\b(?:\s*\([^)]*\))?\s+(\S+)", line
        )
        if not match:
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        name, code = match.group(2), match.group(3)
        while parents and parents[-1][0] >= depth:
            parents.pop()
        drawn[name] = (parents[-1][1] if parents else "", code)
        parents.append((depth, name))
    real = {
        cls.__name__: cls
        for cls in vars(errors).values()
        if inspect.isclass(cls) and issubclass(cls, errors.Error)
    }
    assert set(drawn) == set(real), "the tree and errors.py name different classes"
    for name, (parent, code) in drawn.items():
        cls = real[name]
        if name == "Error":
            continue  # the root's line is the header of the code column
        assert cls.default_code == code, f"{name}: the tree says {code}"
        if parent:
            assert cls.__bases__[0] is real[parent], f"{name}: the tree says it is a {parent}"
