"""The import graph runs one way: model <- worker <- service, training -> worker, model.

Given every module of the project packages, when their imports are read (with ast, so nothing is
executed), then no module of worker/, training/ or model/ imports service, model imports no other
project package, and bench/ does not import the test suite. A lazy import inside a function counts
as much as one at the top of the file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"model", "worker", "service", "training", "bench", "tests"}
ALLOWED = {
    "model": set(),
    "worker": {"model"},
    "training": {"model", "worker"},
    "service": {"model", "worker"},
    "bench": {"model", "worker", "service", "training"},   # everything but the tests
}


def imported_packages(path: Path) -> set[str]:
    """The project packages `path` imports (absolute imports; relative ones stay in the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & PROJECT
    return found


def offending(package: str, allowed: set[str]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other in imported_packages(path) - allowed - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {other}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    assert offending(package, ALLOWED[package]) == []


def test_the_checker_sees_lazy_imports(tmp_path):
    # given a module that imports service inside a function, then it is found
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from service.views import x\n    import worker.tasks\n")
    assert imported_packages(f) == {"service", "worker"}
