"""The house stays in order: the import-linter contracts in pyproject.toml hold, no import circle, small modules and
functions (a long function says why in its docstring)."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO

PACKAGES = ("unseen", "tasks", "flows", "benchmarks")
SOURCES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def test_import_linter_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_no_import_circle():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module, as_packages=False):
                circles.append(f"{module} -> {imported} -> ... -> {module}")
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_are_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 300, f"{path.relative_to(REPO)}: {len(source.splitlines())} lines (at most 300)"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:
            reason = (ast.get_docstring(node) or "").lower()
            assert "longer than 50 lines" in reason, f"{path.relative_to(REPO)}:{node.lineno} {node.name} has no stated reason for its length"
