"""The package layout holds: imports only point down, and nothing hides an import in a function.

The layers are DESIGN.md's table (and the README's "How it fits together"): each package may
import only the packages listed for it. The test reads every module's imports with `ast`, those
inside functions included, so an upward import cannot hide from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
BASE = {"config", "errors", "processes", "files", "api_keys"}

# package -> the packages it may import (besides itself). Read top to bottom.
MAY_IMPORT: dict[str, set[str]] = {
    "cli": {
        "harness",
        "console",
        "deploy",
        "rollout",
        "analysis",
        "serving",
        "registry",
        "flags",
        "store",
    }
    | BASE,
    # The console reads the selector over HTTP (as any monitor would), never its code.
    "console": {"rollout", "analysis", "registry", "flags", "store"} | BASE,
    # Renders deployments from flags/ and the registry; nothing below imports it.
    "deploy": {"registry", "flags", "store"} | BASE,
    "harness": {"rollout", "analysis", "serving", "registry", "flags", "store"} | BASE,
    "rollout": {"analysis", "registry", "flags", "store"} | BASE,
    "analysis": {"registry", "flags", "store"} | BASE,
    "serving": {"registry", "flags", "store"} | BASE,
    "registry": {"flags", "store"} | BASE,
    "flags": {"store"} | BASE,
    "store": BASE,
    "processes": {"errors"},
    "api_keys": {"errors"},
    "files": set(),
    "config": {"errors"},  # a setting that does not parse is a ConfigError naming its variable
    "errors": set(),
}
# Only the CLI defers imports, so that `rollout --help` does not pay for BentoML and pandas.
MAY_DEFER = {"cli"}
# Single modules that must defer one import, and why (never to dodge a cycle).
DEFERRED_FOR_A_REASON = {
    "serving/prefork.py": "prometheus_client is imported after PROMETHEUS_MULTIPROC_DIR is set",
}


def _package_of(module: str) -> str | None:
    """`service.flags.sync` -> `flags`; anything outside `service` -> None."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) < 2:
        return None
    return parts[1].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every `service` import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{a.name}" for a in child.names]
                targets = names if child.module == "service" else [child.module]
                found.extend((t, child.lineno, in_function) for t in targets)
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            visit(child, nested)

    visit(tree, False)
    return [(m, line, fn) for m, line, fn in found if m.split(".")[0] == "service"]


def _modules() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if "__pycache__" not in p.parts)


def _own_package(path: Path) -> str:
    return path.relative_to(SERVICE).parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SERVICE)))
def test_imports_point_down(path: Path) -> None:
    own = _own_package(path)
    if own == "__init__":
        return
    allowed = MAY_IMPORT[own] | {own}
    wrong = [
        f"line {line}: imports {module}"
        for module, line, _ in _imports(path)
        if (_package_of(module) or own) not in allowed
    ]
    assert not wrong, f"{path.relative_to(SERVICE)} ({own}) imports upward: {wrong}"


# The request path reads the registry (which versions exist, where they are) but never builds.
REGISTRY_READ_SIDE = {
    "service.registry",
    "service.registry.versions",
    "service.registry.bentos",
    "service.registry.stable",  # serving reads each family's stable version; promote is the CLI's
}


@pytest.mark.parametrize("path", sorted((SERVICE / "serving").rglob("*.py")), ids=str)
def test_serving_reads_the_registry_but_never_builds(path: Path) -> None:
    wrong = [
        f"line {line}: {module}"
        for module, line, _ in _imports(path)
        if _package_of(module) == "registry" and module not in REGISTRY_READ_SIDE
    ]
    assert not wrong, f"{path.relative_to(SERVICE)} imports the registry's write side: {wrong}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SERVICE)))
def test_no_import_hidden_in_a_function(path: Path) -> None:
    if _own_package(path) in MAY_DEFER or str(path.relative_to(SERVICE)) in DEFERRED_FOR_A_REASON:
        return
    hidden = [f"line {line}: {m}" for m, line, inside in _imports(path) if inside]
    assert not hidden, f"{path.relative_to(SERVICE)} imports inside a function: {hidden}"


def test_every_package_has_a_layer() -> None:
    packages = {_own_package(p) for p in _modules()} - {"__init__"}
    assert packages <= set(MAY_IMPORT), packages - set(MAY_IMPORT)


def test_no_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in _modules():
        name = ".".join(("service", *path.relative_to(SERVICE).with_suffix("").parts))
        graph[name.removesuffix(".__init__")] = {m for m, _, _ in _imports(path)}
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            target = target if target in graph else target.rsplit(".", 1)[0]
            if target not in graph or target == node:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [node, target]
            if state.get(target) is None and (found := walk(target, [*path, target])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None and (found := walk(start, [start])):
            return found
    return None


@pytest.mark.parametrize("package", sorted(set(MAY_IMPORT) - BASE - {"files"}))
def test_every_package_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse((SERVICE / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 12, f"service/{package}/__init__.py needs a docstring"


def test_top_level_holds_at_most_six_modules() -> None:
    top = [p.name for p in SERVICE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 6, top
