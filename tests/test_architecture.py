"""The package's shape: no module imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import dvc_task

PACKAGE = Path(dvc_task.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (also lazily or for typing)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif node.module in modules:
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif (  # lazy.module("dvc_task..."): imported at its first use
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in modules
        ):
            found.add(node.args[0].value)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(paths)
    return {name: _imports(path, names) - {name} for name, path in paths.items()}


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to it, if there is one."""
    todo = [(start, [start])]
    seen = set()
    while todo:
        current, path = todo.pop()
        for nxt in sorted(graph[current]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                todo.append((nxt, [*path, nxt]))
    return None


def test_no_module_imports_another_that_imports_it_back() -> None:
    graph = _graph()
    assert "dvc_task.jobs.lifecycle.phases" in graph
    cycles = [c for name in sorted(graph) if (c := _cycle_from(graph, name))]
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from(graph, "a") == ["a", "b", "c", "a"]
    assert _cycle_from(graph, "d") is None


def test_only_the_lifecycle_module_writes_a_phase() -> None:
    writers = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
            and any(
                isinstance(target, ast.Attribute) and target.attr == "phase"
                for target in (
                    node.targets if isinstance(node, ast.Assign) else [node.target]
                )
            )
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert writers == ["dvc_task.jobs.lifecycle.phases"]
