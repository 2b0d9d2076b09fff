"""protocol/ is sans-I/O: it must not import anything that does I/O, keeps time or draws
randomness (architecture 4.1). Walks the source with ast, so it cannot be fooled by an import
that happens not to run. The daemon's pure policy layer has the same rule in
tests/kms_host/test_layers.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "random",
    "secrets",
    "sqlite3",
    "structlog",
    "logging",
    "kms_host",
}
SOURCES = sorted((ROOT / "protocol").rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_imports(path: Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom asyncio import sleep\nimport time as t\n")
    assert imported_roots(sample) & FORBIDDEN == {"asyncio", "time"}


def test_sources_were_found() -> None:
    assert len(SOURCES) > 5
