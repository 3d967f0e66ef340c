"""The package's architecture, held by a walk over its imports (every import statement, those
inside functions and under ``TYPE_CHECKING`` included).

Layers point one way: cli -> commands -> sync -> (source, rows, state, aitems) -> (spec, errors).
No module imports itself back through others, and an import inside a function says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aitems_sync"

#: What each part may import (besides itself). The root package (``__init__``) is the public
#: API: it names everything, lazily, and nothing inside the package imports it but for
#: ``__version__``.
ALLOWED: dict[str, set[str]] = {
    "redact": set(),  # the masking of credentials, under everything
    "drivers": set(),  # the extras that install database drivers, for the missing-driver fix
    "undecodable": set(),  # a value a driver could not read: made by source, judged by rows
    "errors": {"redact"},
    "spec": {"errors", "redact"},
    "rows": {"spec", "errors", "undecodable"},
    "source": {"spec", "errors", "redact", "undecodable", "drivers"},
    "aitems": {"spec", "errors"},
    "objectstorage": {"errors"},  # S3 for bootstrap files; boto3 imported only in it
    # the ledger keeps rows' hashes, by scheme
    "state": {"rows", "spec", "errors", "redact", "undecodable", "drivers"},
    "sync": {"source", "rows", "state", "aitems", "spec", "errors", "undecodable",
             "objectstorage"},
    # init: a starter spec from a database's tables
    "scaffold": {"source", "spec", "errors", "redact"},
    "commands": {"sync", "source", "rows", "state", "aitems", "spec", "errors",
                 "objectstorage", "scaffold"},
    "cli": {"commands", "sync", "spec", "errors", "emulator", "__init__", "redact"},
    "emulator": {"aitems", "errors"},  # signature v2, shared with the client
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules that ``path`` imports, with the line of each import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(
        ".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                if child in known:
                    yield child, node.lineno
                elif base in known:
                    yield base, node.lineno


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        part = part_of(module)
        if part == "__init__":
            continue
        for target in sorted(targets):
            other = part_of(target)
            if other != part and other not in ALLOWED.get(part, set()):
                found.append(f"{module} imports {target}: {part} may not import {other}")
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, set()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def package_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {name: {t for t, _ in imports_of(path, known) if t != name}
             for name, path in known.items()}
    # The root's imports are lazy (PEP 562) or for type checkers only: it is the API's index.
    graph["aitems_sync"] = set()
    return graph


def test_the_walk_sees_the_package_and_its_imports() -> None:
    graph = package_graph()

    assert {"aitems_sync.sync.engine", "aitems_sync.state.store", "aitems_sync.cli.main"} <= set(
        graph)
    assert "aitems_sync.state.store" in graph["aitems_sync.sync.engine"]
    assert "aitems_sync.commands" in graph["aitems_sync.cli.main"]


def test_every_part_is_named_in_the_layer_rules() -> None:
    parts = {part_of(m) for m in modules()} - {"__init__"}

    assert parts == set(ALLOWED)


def test_layers_point_one_way() -> None:
    assert layer_violations(package_graph()) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(package_graph()) == []


def test_the_cli_never_touches_the_state_store_or_aitems() -> None:
    graph = package_graph()
    cli = {t for m, targets in graph.items() if part_of(m) == "cli" for t in targets}

    assert not {part_of(t) for t in cli} & {"state", "aitems", "source", "rows"}


@pytest.mark.parametrize(("graph", "expected"), [
    ({"aitems_sync.state.store": {"aitems_sync.sync.engine"}},
     ["aitems_sync.state.store imports aitems_sync.sync.engine: state may not import sync"]),
    ({"aitems_sync.cli.main": {"aitems_sync.state.store"}},
     ["aitems_sync.cli.main imports aitems_sync.state.store: cli may not import state"]),
    ({"aitems_sync.sync.engine": {"aitems_sync.state.store"}}, []),
])
def test_the_layer_rule_reports_an_import_against_the_grain(
    graph: dict[str, set[str]], expected: list[str]
) -> None:
    assert layer_violations(graph) == expected


def test_the_cycle_finder_reports_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    assert cycles(graph) == [["a", "b", "c"]]


def _deferred_imports() -> Iterator[tuple[str, int, str]]:
    known = modules()
    for name, path in known.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom) and any(
                        True for _ in imports_of_node(node, known)):
                    context = " ".join(lines[max(0, node.lineno - 3): node.end_lineno or 0])
                    yield name, node.lineno, context


def imports_of_node(node: ast.Import | ast.ImportFrom,
                    known: Mapping[str, Path]) -> Iterator[str]:
    """The package's modules one (absolute) import statement names."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name in known)
        return
    for alias in node.names:
        child = f"{node.module}.{alias.name}"
        if child in known or node.module in known:
            yield child if child in known else str(node.module)


def test_an_import_of_our_own_inside_a_function_says_why() -> None:
    unexplained = [f"{name}:{line}" for name, line, context in _deferred_imports()
                   if "start-up" not in context and "here" not in context]

    assert unexplained == []
