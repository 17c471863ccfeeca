"""Layers point one way: app -> labeling -> models -> datasets; no import goes up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {  # package -> top-level names it must never import (at any depth of its code)
    "datasets": {"labeling", "models", "app_pages", "app", "torch", "streamlit"},
    "models": {"labeling", "app_pages", "app", "streamlit"},
    "labeling": {"app_pages", "app", "streamlit"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_goes_up_a_layer(package):
    bad = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_labeling_imports_torch_code_only_inside_functions():
    """Module-level imports of ``models`` from ``labeling`` name only the torch-free parts."""
    torch_free = {"models.folder", "models.errors"}
    found = {}
    for path in sorted((ROOT / "labeling").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("models"):
                if node.module not in torch_free:
                    found[str(path.relative_to(ROOT))] = node.module
    assert found == {}
