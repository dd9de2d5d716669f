"""The reward modules import one another one way: no cycle, and base.py imports none of its builders."""

import ast
from pathlib import Path

import rest_cli.rewards

PACKAGE = "rest_cli.rewards"
FOLDER = Path(rest_cli.rewards.__file__).parent


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def imported(path: Path, modules: set[str]) -> set[str]:
    """The modules of rest_cli.rewards that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join([PACKAGE, *([base] if base else [])])
            # `from pkg import name`: name is a submodule, or something the package module defines
            names = [f"{base}.{alias.name}" for alias in node.names]
            found |= {name if name in modules else base for name in names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = sorted(FOLDER.glob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return []


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    (tmp_path / "x.py").write_text("def f():\n    from rest_cli.rewards.base import Reward\n")
    assert imported(tmp_path / "x.py", {f"{PACKAGE}.base"}) == {f"{PACKAGE}.base"}


def test_no_import_cycle_among_the_reward_modules():
    graph = import_graph()
    assert {f"{PACKAGE}.base", f"{PACKAGE}.build", f"{PACKAGE}.spec"} <= graph.keys()
    assert find_cycle(graph) == []


def test_base_imports_no_other_reward_module():
    assert import_graph()[f"{PACKAGE}.base"] == set()
