"""The habits CI enforces: ``mypy --strict`` and ``ruff check`` clean, build backend included.

They run inside the test suite so that the README's one test command (and so CI) holds
every change to them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_is_clean() -> None:
    result = run("mypy", "--strict", "protocol", "kms_host", "_build", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "protocol", "kms_host", "tests", "scripts", "_build", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr
