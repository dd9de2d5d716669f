"""The package's structure, as docs/architecture.md states it: imports flow one way, with no cycle,
and only the native kind's own package names its model class and special token ids."""

import ast
import re
from pathlib import Path

import pytest

import rest_cli

ROOT = Path(rest_cli.__file__).parent
# Each top-level part of rest_cli and its level: a module imports from lower levels, or its own part.
LEVEL = {"__init__": 0, "errors": 0, "correlation": 0, "io": 1, "models": 2, "rewards": 2, "select": 2,
         "sampling": 3, "train": 3, "demo": 3, "eval": 4, "loop": 4, "view": 5, "cli": 6, "__main__": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The rest_cli modules that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert not node.level, f"{path}: relative import (this package imports absolutely)"
            # `from pkg import name`: name is a submodule, or something the package module defines
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {name if name in modules else node.module for name in names}
    return found & modules


def import_graph(folder: Path = ROOT) -> dict[str, set[str]]:
    paths = sorted(folder.rglob("*.py"))
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


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_the_checker_finds_a_cycle_and_sees_imports_inside_functions(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    (tmp_path / "x.py").write_text("def f():\n    from rest_cli.io.records import Record\n")
    assert imported(tmp_path / "x.py", {"rest_cli.io.records"}) == {"rest_cli.io.records"}


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert {"rest_cli.models.base", "rest_cli.train.run", "rest_cli.cli.main"} <= graph.keys()
    assert find_cycle(graph) == []


def test_every_part_has_a_level():
    assert {part(m) for m in import_graph()} == set(LEVEL)


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_flow_down(module):
    upward = [other for other in import_graph()[module]
              if part(other) != part(module) and LEVEL[part(other)] >= LEVEL[part(module)]]
    assert upward == [], f"{module} imports from its level or above: {upward}"


NATIVE_NAMES = re.compile(r"\b(Seq2SeqTransformer|PAD_ID|BOS_ID|EOS_ID|UNK_ID|teacher_forcing)\b")


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("*.py") if "native" not in p.parts),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_native_package_names_its_model_and_special_ids(path):
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    assert not {m for m in imported(path, modules) if m.startswith("rest_cli.models.native")}
    assert not NATIVE_NAMES.findall(path.read_text(encoding="utf-8"))
