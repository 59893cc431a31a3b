"""The program uses no pulumi-command: its plugin cannot be built here, and its Command never reads the world back.

The scan reads the source (``ast``), so an import inside a function, behind ``if TYPE_CHECKING``
or in a test counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("clients", "components", "drill", "verify", "lab", "bench", "policy", "tools", "tests", "__main__.py")


def python_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [f for f in files if f != Path(__file__).resolve()]  # this file's samples are the one exception


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (``import a.b``, ``from a.b import c``, ``importlib.import_module("a.b")``),
    and those of any Python program it holds as a string (a test writing a Pulumi program to run)."""
    return imports_in(path.read_text(encoding="utf-8"), str(path))


def imports_in(source: str, filename: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "pulumi_command" in node.value:
            with contextlib.suppress(SyntaxError):  # prose naming the package is not a program
                found |= imports_in(node.value, f"{filename} (a program in a string)")
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def test_the_scan_sees_the_source() -> None:
    files = python_files()
    assert ROOT / "__main__.py" in files and ROOT / "components" / "stack.py" in files
    assert len(files) > 30


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_pulumi_command(path: Path) -> None:
    offending = sorted(m for m in imports_of(path) if m == "pulumi_command" or m.startswith("pulumi_command."))
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}: the program uses its own dynamic resources (components/dynamic.py)"


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    from pulumi_command import remote\n    return remote\n",
        "import pulumi_command.remote as remote\n",
        "import importlib\nremote = importlib.import_module('pulumi_command')\n",
        'PROGRAM = """\nfrom pulumi_command import local\nlocal.Command("hello", create="echo")\n"""\n',
    ],
    ids=["in-a-function", "dotted", "import_module", "a-program-in-a-string"],
)
def test_the_scan_would_catch_an_import(tmp_path: Path, source: str) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(source)
    assert any(m.split(".")[0] == "pulumi_command" for m in imports_of(sample))


def test_prose_naming_the_package_is_not_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""This program uses no pulumi_command: its plugin cannot be built here."""\n')
    assert imports_of(sample) == set()
