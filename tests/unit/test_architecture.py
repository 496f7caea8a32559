"""The library's shape: imports flow one way, and each layer imports only what it may.

The import graph is read from the source (imports inside functions included, as they run too), so
a cycle or a forbidden dependency fails here before it fails at run time on another machine.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "ml_platform"
# Modules (and packages) that are Dagster wiring by design; the rest must work without Dagster.
DAGSTER_MODULES = {"ml_platform.definitions", "ml_platform.cli"}
# The trainer runs on a GPU image that has torch but none of the platform's other dependencies.
TRAINER_ALLOWED = {"numpy", "torch", "safetensors", "ml_platform.core", "ml_platform.training"}
# Read only by the functions that take DataFrames, never when the trainer is imported.
TRAINER_LAZY = {"pandas", "pyarrow"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, at_import: bool = False) -> list[tuple[str, bool]]:
    """(imported module, only for type checking) for every import statement in ``path``.

    With ``at_import``, only the imports that run when the module is imported (not those
    inside functions).
    """
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    in_functions: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(child) for child in ast.walk(node)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_functions |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if at_import and id(node) in in_functions:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, id(node) in typing_only)]
            found += [(f"{node.module}.{a.name}", id(node) in typing_only) for a in node.names]
    return found


def _library() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(LIBRARY.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    modules = _library()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, typing_only in _imports(path):
            if typing_only:
                continue
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A package importing its own submodule, or a module its parent package, is no edge.
            if target and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules on it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_library_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_works_without_dagster() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, path in _library().items()
        if not any(name == m or name.startswith(m + ".") for m in DAGSTER_MODULES)
        for target, _ in _imports(path)
        if target.split(".")[0] in ("dagster", "dagster_k8s", "dagster_mlflow")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "name",
    [n for n in _library() if n.startswith("ml_platform.training")]
    or ["ml_platform.training (missing)"],
)
def test_the_trainer_imports_only_what_a_gpu_image_has(name: str) -> None:
    path = _library().get(name)
    assert path is not None, f"{name} not found"
    if name.startswith("ml_platform.training.flavors"):
        pytest.skip("flavors wrap the trainer and may use their own library (xgboost)")
    standard = set(sys.stdlib_module_names) | {"__future__"}

    def forbidden(imports: list[tuple[str, bool]], allowed: set[str]) -> list[str]:
        return sorted(
            {
                target
                for target, typing_only in imports
                if not typing_only
                and target.split(".")[0] not in standard
                and not any(target == a or target.startswith(a + ".") for a in allowed)
            }
        )

    assert forbidden(_imports(path), TRAINER_ALLOWED | TRAINER_LAZY) == []
    assert forbidden(_imports(path, at_import=True), TRAINER_ALLOWED) == []
