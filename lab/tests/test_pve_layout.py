"""lab/pve is laid out like PVE's API tree with no import cycles: every module imports, the
import graph between lab.pve modules (every import statement, at any depth, TYPE_CHECKING
blocks included) is acyclic, and the model modules never import the API or the app."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from lab.testing.imports import find_cycle

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lab" / "pve"
# Model modules: the cluster's state and machinery, which the API modules drive.
MODEL = ("lab.pve.ha", "lab.pve.rbdstore", "lab.pve.vmproc", "lab.pve.calllog", "lab.pve.units")
# Run by the system's python3 with Debian's python3-rbd, never imported by the server.
SCRIPTS = ("lab.pve.holder",)


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "shims" in path.relative_to(PACKAGE).parts:
            continue  # the nodes' commands: scripts that load control.py by path
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def source_of(name: str) -> Path:
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(name: str, known: set[str]) -> set[str]:
    """The lab.pve modules NAME imports, by any import statement anywhere in it."""
    tree = ast.parse(source_of(name).read_text())
    is_package = source_of(name).name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            # `from lab.pve import procs` imports lab.pve.procs; `import lab.pve.x.y` imports lab.pve.x
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != "lab.pve":
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {name: imports_of(name, known) for name in names}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lab_pve_has_no_import_cycle():
    edges = graph()
    assert "lab.pve.app" in edges and "lab.pve.api.cluster_ha" in edges, sorted(edges)
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_model_modules_never_import_the_api_or_the_app():
    edges = graph()
    for model in [name for name in edges if name in MODEL or name.startswith("lab.pve.ha.")]:
        bad = sorted(m for m in edges[model] if m.startswith("lab.pve.api") or m in ("lab.pve.app", "lab.pve.server", "lab.pve.control_app"))
        assert not bad, f"{model} imports {bad}"


def test_api_modules_import_no_app_and_no_other_api_module_but_tasks():
    edges = graph()
    for name, deps in edges.items():
        if not name.startswith("lab.pve.api."):
            continue
        bad = sorted(
            d for d in deps if d in ("lab.pve.app", "lab.pve.server", "lab.pve.control_app") or (d.startswith("lab.pve.api.") and d != "lab.pve.api.tasks")
        )
        assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", [n for n in module_names() if n not in SCRIPTS])
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_holder_script_is_in_the_graph_but_run_by_the_system_python():
    assert "lab.pve.holder" in graph()
    assert importlib.util.find_spec("lab.pve.holder") is not None
