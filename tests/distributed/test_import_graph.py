"""The package's import graph: no cycle, and the core imports none of the layers above it.

Built from the source (every import statement, including those inside functions and
TYPE_CHECKING blocks), not from what happens to be loaded, so a lazy import that would
close a cycle is caught too. A package's own __init__ is not an edge of its submodules:
Python runs it first, but it is the package's front door, not a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ssd_fast

ROOT = Path(ssd_fast.__file__).parent
LAYERS_ABOVE_CORE = ("ssd_fast.distributed", "ssd_fast.integrations", "ssd_fast.eval", "ssd_fast.bench")
NOT_CORE = (*LAYERS_ABOVE_CORE, "ssd_fast.compat")  # compat is a drop-in for another API, above the core too


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _targets(node: ast.AST, name: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """The ssd_fast modules one import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = _package_of(name, path)
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base not in modules:
        return []
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
    if len(found) < len(node.names):  # some names are attributes of `base` itself
        found.append(base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            edges.update(_targets(node, name, path, modules))
        graph[name] = {
            e for e in edges if e != name and not name.startswith(e + ".")
        }  # a parent __init__ runs first anyway
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _is_core(name: str) -> bool:
    return name != "ssd_fast" and not any(name == p or name.startswith(p + ".") for p in NOT_CORE)


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "ssd_fast._parallel" in graph["ssd_fast._pairing"]  # from ._parallel import unwrap
    assert "ssd_fast.importance" in graph["ssd_fast.distributed._sharded_batch"]  # a lazy import, in a function
    assert "ssd_fast.distributed" in graph["ssd_fast"]  # from . import distributed
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_imports_no_layer_above_it():
    graph = import_graph()
    core = [m for m in graph if _is_core(m)]
    assert {"ssd_fast.importance", "ssd_fast.importances", "ssd_fast._pairing", "ssd_fast._checkpoint"} <= set(core)
    wrong = {m: sorted(e for e in graph[m] if not _is_core(e) and e != "ssd_fast") for m in core}
    assert not {m: e for m, e in wrong.items() if e}


def test_importing_the_package_warns_nothing():
    """Every warning is an error in a fresh interpreter (issue 20: a FutureWarning on import)."""
    code = "import ssd_fast, ssd_fast.distributed, ssd_fast.integrations"
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=ROOT.parent, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr == ""
