"""The repository's shape (issue #24): no file of the product, the tools or the lab over 600 lines;
nothing outside tests/ imports tests/; no import cycle between the project's modules (imports at
module level: a function's own import is how a cycle is broken on purpose)."""

from __future__ import annotations

import ast
from pathlib import Path

from lab.testing.imports import find_cycle

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".tools", ".lab", ".state", ".test-logs", "node_modules", ".git"}
PACKAGES = ("clients", "components", "verify", "drill", "maintain", "lab", "bench", "tools", "policy", "examples")
MAX_LINES = 600


def sources(*, tests: bool) -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if SKIP & set(parts) or ("tests" in parts) != tests:
            continue
        found.append(path)
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        body = node.body if isinstance(node, ast.If | ast.Try) else [node]  # `if TYPE_CHECKING:` and the like
        for statement in body:
            if isinstance(statement, ast.Import):
                names.update(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
                names.add(statement.module)
                names.update(f"{statement.module}.{alias.name}" for alias in statement.names)
    return names


def test_no_file_outside_the_tests_is_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sources(tests=False) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_nothing_outside_the_tests_imports_them() -> None:
    importing = {}
    for path in sources(tests=False):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m == "tests" or m.startswith("tests.") for m in modules):
                importing[str(path.relative_to(ROOT))] = modules
    assert not importing, importing


def test_no_import_cycle_between_the_projects_modules() -> None:
    paths = [p for p in sources(tests=False) if p.relative_to(ROOT).parts[0] in PACKAGES or p.parent == ROOT]
    known = {module_name(p): p for p in paths}
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in top_level_imports(path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):  # a package's own __init__ is no cycle
                targets.add(imported)
        edges[name] = targets
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
