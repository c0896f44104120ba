"""Import boundaries: the network layer's core modules load without the model stack (torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["stream.hub", "stream.wire.messages", "engine.types", "engine.windows"])
def test_the_sans_io_core_imports_without_torch(module: str) -> None:
    probe = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"importing {module} loaded torch" if done.returncode == 3 else done.stderr


ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("livecanvas", "stream", "engine", "clients")


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports anywhere (functions included), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    return {name: project_imports(path) & set(modules) for name, path in modules.items()}


def test_no_module_imports_itself_through_others() -> None:
    """No import circle among the project's modules, lazy (function-level) imports included: a circle
    means two modules that cannot be read, tested or moved apart."""
    graph = module_graph()
    assert len(graph) > 50
    circles = []
    for start in sorted(graph):
        seen, todo = set(), [(start, (start,))]
        while todo:
            module, path = todo.pop()
            for imported in sorted(graph[module]):
                if imported == start:
                    circles.append(" -> ".join((*path, start)))
                elif imported not in seen:
                    seen.add(imported)
                    todo.append((imported, (*path, imported)))
    assert circles == []


LAYERS_MAY_NOT_IMPORT = {
    "livecanvas": (),  # the command line, the composition root: it wires the other three together
    "engine": ("livecanvas", "stream", "clients"),  # the model stack knows nothing of the network
    "stream": ("livecanvas", "clients"),  # the server
    "clients": ("livecanvas", "engine"),  # clients speak the protocol (stream's wire and captions) only
}


def test_the_layers_import_only_downwards() -> None:
    crossings = [
        f"{module} imports {imported}"
        for module, imports in sorted(module_graph().items())
        for imported in sorted(imports)
        if imported.split(".")[0] in LAYERS_MAY_NOT_IMPORT.get(module.split(".")[0], ())
    ]
    assert crossings == []
