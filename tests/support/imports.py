"""What importing a module of `stream` executes, read from the source (no import, no child process).

A module's load runs its top-level statements: the imports at module level, in class bodies and under `if` or
`try`, but not those inside functions (they run when called) nor under `if TYPE_CHECKING:` (never at run time).
Importing `stream.a.b` also runs `stream/__init__.py` and `stream/a/__init__.py`. Modules outside `stream` are
not followed: the third-party libraries the core uses (pydantic, orjson, scipy) do not import the I/O frameworks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "stream"


def source_of(module: str) -> Path | None:
    """The file that defines `module` (a package's `__init__.py`), or None when it is not one of ours."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module loads: into blocks, not into function bodies."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _load_time_nodes(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _load_time_nodes(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _load_time_nodes(handler.body)


def direct_imports(module: str) -> set[str]:
    """Absolute names of the modules `module` imports as it loads (a `from x import y` counts x, and x.y too
    when y is a module of ours)."""
    path = source_of(module)
    if path is None:
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _load_time_nodes(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if source_of(f"{base}.{a.name}") is not None)
    return found


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def loaded_by(module: str) -> set[str]:
    """Every module importing `module` loads: ours followed transitively, others by name."""
    seen: set[str] = set()
    todo = _with_parents(module)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] == PACKAGE:
            for imported in direct_imports(name):
                todo.extend(_with_parents(imported))
    return seen


def top_level_packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}
