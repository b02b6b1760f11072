"""Layers point one way: no import cycle between mt2kd_lib's subpackages (lhotse's rule, see STYLE.md).

Parses every module's imports (also the ones inside functions: a lazy import is still a dependency) and fails on
any cycle in the package graph, naming it.
"""

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

from conftest import REPO

LIB = REPO / "mt2kd_lib"


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mt2kd_lib" else ""


def package_graph() -> Dict[str, Set[str]]:
    """subpackage -> the other subpackages its modules import."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        src = _subpackage(".".join(rel.parts))
        if not src or path.parent == LIB:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                dst = _subpackage(name)
                if dst and dst != src and (LIB / dst).is_dir():
                    graph[src].add(dst)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) == []


def test_no_cycle_between_subpackages():
    graph = package_graph()
    assert "models" in graph.get("training", set())  # the parser sees real imports
    cycle = find_cycle(graph)
    assert not cycle, f"import cycle between mt2kd_lib packages: {' -> '.join(cycle)} (graph: {dict(graph)})"
