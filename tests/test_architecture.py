"""The package's layers, held by a test: which package may import which (docs/architecture.md),
and no import cycle between modules. Imports inside functions count too: they are the same
dependency, only paid later."""

from __future__ import annotations

import ast
from pathlib import Path

import heretic

ROOT = Path(heretic.__file__).parent

# What each top-level part of heretic may import (besides itself). Leaves import nothing of
# heretic's but the package's version.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "allocator": set(),
    "progress": set(),
    "phases": set(),
    "secrets": set(),
    "atomic": set(),
    "statefiles": {"errors"},
    "jsontypes": set(),
    "hub_client": set(),
    "webhook": {"__init__"},
    "image": {"__init__"},
    "cuda_libraries": set(),
    "install_check": {"__init__", "cuda_libraries", "image"},
    "config": {"errors", "jsontypes", "secrets"},
    "demo": {"jsontypes", "progress"},
    "engine": {
        "allocator",
        "atomic",
        "config",
        "demo",
        "errors",
        "jsontypes",
        "progress",
        "statefiles",
    },
    "judging": {"config", "engine", "errors", "jsontypes", "secrets"},
    "preflight": {
        "atomic",
        "config",
        "demo",
        "engine",
        "errors",
        "judging",
        "jsontypes",
        "secrets",
        "statefiles",
    },
    "cloud": {"__init__", "atomic", "config", "errors", "image", "preflight", "secrets", "webhook"},
    "lifecycle": {
        "atomic",
        "cloud",
        "config",
        "errors",
        "hub_client",
        "phases",
        "progress",
        "secrets",
        "statefiles",
        "webhook",
    },
    "run": {
        "__init__",
        "atomic",
        "config",
        "demo",
        "engine",
        "errors",
        "jsontypes",
        "judging",
        "lifecycle",
        "phases",
        "preflight",
        "progress",
        "secrets",
        "statefiles",
    },
    "cli": {
        "__init__",
        "cloud",
        "config",
        "errors",
        "install_check",
        "lifecycle",
        "preflight",
        "progress",
        "run",
        "secrets",
    },
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The heretic modules `path` imports (a name imported from a package counts as its
    submodule when it is one)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        out |= {t for t in targets if t == "heretic" or t.startswith("heretic.")}
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        name: {t for t in _imports(path, known) if t in known and t != name}
        for name, path in known.items()
    }


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in _graph().items()
        for t in targets
        if _part(t) != _part(m) and _part(t) not in ALLOWED[_part(m)]
    )
    assert wrong == []


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []
