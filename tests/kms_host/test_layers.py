"""The package tree's import directions, read from the source with ``ast``.

Two rules keep the tree's shape honest (docs/architecture.md):

* ``kms_host.policy`` decides from values: it imports no storage, no other I/O layer of the
  host, no module that does I/O on sockets, databases, processes or the event loop, and
  neither logs nor reads the clock or a random source, so its rules stay unit-testable
  without a daemon. (Reading the packaged catalog at start is allowed.)
* ``kms_host.cli`` and ``kms_host.bench`` are leaves: nothing else imports them (the bench may
  import the host, the CLI anything). ``kms_host.__main__`` is the ``python -m kms_host``
  entry point, the console script's twin, and is the one exception.

Every import counts, including those inside functions (``ast.walk`` sees them all) and
relative ones, so an import that happens not to run cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kms_host"

POLICY_FORBIDDEN = (
    "kms_host.storage",
    "kms_host.host",
    "kms_host.discovery",
    "kms_host.client",
    "kms_host.cli",
    "kms_host.bench",
    "asyncio",
    "asyncio_dgram",
    "concurrent",
    "dns",
    "http",
    "logging",
    "multiprocessing",
    "prometheus_client",
    "random",
    "secrets",
    "selectors",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "structlog",
    "subprocess",
    "threading",
    "time",
    "urllib",
    "uvloop",
    "wsgiref",
)
LEAVES = ("kms_host.cli", "kms_host.bench")
ENTRY_POINTS = frozenset({"kms_host.__main__"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool) -> set[str]:
    """Every module ``source`` imports, absolute, wherever in the file the import stands."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            names.add(target)
            # ``from kms_host import cli`` imports the subpackage itself.
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, imported: set[str]) -> list[str]:
    """The rule each import of ``module`` breaks, if any."""
    found: list[str] = []
    if within(module, "kms_host.policy"):
        found += [
            f"{module} (policy) imports {name}"
            for name in sorted(imported)
            if any(within(name, bad) for bad in POLICY_FORBIDDEN)
        ]
    if module not in ENTRY_POINTS and not any(within(module, leaf) for leaf in LEAVES):
        found += [
            f"{module} imports {name}, a leaf only the command line may use"
            for name in sorted(imported)
            if any(within(name, leaf) for leaf in LEAVES)
        ]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_the_right_way(path: Path) -> None:
    module = module_name(path)
    imported = imports_of(
        path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
    )
    assert violations(module, imported) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("kms_host.policy.x", "import asyncio", "asyncio"),
        ("kms_host.policy.x", "def f():\n    from kms_host.storage import open_store", "storage"),
        ("kms_host.policy.x", "from ..storage import sqlite", "kms_host.storage"),
        ("kms_host.policy.x", "import socket as s", "socket"),
        ("kms_host.host.x", "from kms_host.cli.main import main", "leaf"),
        ("kms_host.host.x", "from kms_host import bench", "leaf"),
        ("kms_host.storage", "from .. import cli", "leaf"),
        ("kms_host.bench.x", "from kms_host.host.app import serve", None),
        ("kms_host.cli.x", "from kms_host.bench import load", None),
        ("kms_host.__main__", "from kms_host.cli.main import main", None),
        ("kms_host.policy.x", "import uuid\nfrom kms_host.config import PolicyConfig", None),
    ],
)
def test_the_rules_catch_a_wrong_import(module: str, source: str, expected: str | None) -> None:
    is_package = module == "kms_host.storage"
    found = violations(module, imports_of(source, module, is_package=is_package))
    if expected is None:
        assert found == []
    else:
        assert found
        assert all(expected in message for message in found)


def test_the_whole_package_was_walked() -> None:
    names = {module_name(path) for path in SOURCES}
    assert {"kms_host.policy.activation", "kms_host.host.service", "kms_host.cli.main"} <= names
