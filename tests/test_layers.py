"""The pipeline order holds in the imports: no module imports from a later stage."""

from __future__ import annotations

import ast
from pathlib import Path

import kdsearch

# stage of each top-level module or package of kdsearch: teacher (data, models) -> graph ->
# search -> student -> distill, deploy -> compare/show -> the orchestrators -> the command line
STAGES = {
    "errors": 0, "io": 0, "registry": 0, "signals": 0, "numerics": 0, "steps": 0, "settings": 0,
    "data": 1, "models": 1,
    "graph": 2,
    "search": 3, "presets": 3,
    "student": 4, "evaluation": 4,
    "distill": 5, "deploy": 5,
    "compare": 6, "show": 6,
    "pipeline": 7, "tune": 7,
    "demo": 8,
    "cli": 9,
}
ROOT = Path(kdsearch.__file__).parent


def imports_of(path: Path) -> list[str]:
    """Every ``kdsearch.*`` module imported in ``path``, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.startswith("kdsearch.")]


def test_every_module_has_a_stage():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")}
    assert tops - {"__init__", "__main__"} <= STAGES.keys()


def test_no_module_imports_a_later_stage():
    backwards = []
    for path in sorted(ROOT.rglob("*.py")):
        top = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if top in ("__init__", "__main__"):  # the lazy public API and the entry point
            continue
        for module in imports_of(path):
            if STAGES[module.split(".")[1]] > STAGES[top]:
                backwards.append(f"{path.relative_to(ROOT)} imports {module}")
    assert backwards == []

