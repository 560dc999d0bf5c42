"""The import direction of DESIGN.md: web/tasks → workflows → engine → SpiffWorkflow."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("engine", "workflows", "tasks", "web")
#: What each package may import among ours and among the frameworks we keep out of lower layers.
ALLOWED = {
    "engine": {"engine"},
    "workflows": {"workflows", "engine"},
    "tasks": {"tasks", "workflows", "engine"},
    "web": {"web", "tasks", "workflows", "engine"},
}
FORBIDDEN_THIRD_PARTY = {
    "engine": {"sqlalchemy", "flask", "celery", "kombu", "alembic", "click"},
    "workflows": {"flask", "celery", "kombu"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", OURS)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    offences = []
    for path in package_files(package):
        roots = imported_roots(path)
        for root in sorted(roots & (set(OURS) - ALLOWED[package])):
            offences.append(f"{path.relative_to(REPO)} imports {root}")
        for root in sorted(roots & FORBIDDEN_THIRD_PARTY.get(package, set())):
            offences.append(f"{path.relative_to(REPO)} imports {root}")
    assert offences == []


def test_the_layer_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import flask\nfrom workflows.models import Ticket\nfrom . import sibling\n")
    assert imported_roots(bad) == {"flask", "workflows"}


def test_engine_imports_nothing_of_ours_at_runtime() -> None:
    # A fresh interpreter: importing the engine must not drag in the domain or frameworks.
    import subprocess

    code = "import engine.runtime, sys; print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('workflows','web','tasks','sqlalchemy','flask','celery'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
