"""The plugin as another project's pytest run loads it: a test file in an empty directory.

Each run is a child pytest with the plugin from its entry point, as a user's suite gets it:
pytest-asyncio's strict and auto modes (each coroutine test runs once, by the plugin that
claims it), and a failed and an interrupted test (the daemon still stops gracefully: its
``runtime.json`` is removed and its data dir's lock released). The run without
pytest-asyncio, in a venv with nothing but the package, is in ``tests/test_packaging.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kms_host.host.lock import hold_data_dir

RUN_TIMEOUT_S = 120

MODES_TESTS = """
import inspect
import os

import pytest


def record(name):
    ours = os.path.join("kms_host", "pytest_plugin.py")
    frames = [f for f in inspect.stack() if f.function == "pytest_pyfunc_call"]
    runner = "kms_host" if any(f.filename.endswith(ours) for f in frames) else "other"
    with open(os.environ["RUNS_LOG"], "a") as log:
        log.write(f"{name} {runner}\\n")


def test_sync(kms_host):
    record("sync")
    assert kms_host.activate().hresult == 0


async def test_unmarked(kms_host):
    record("unmarked")
    assert (await kms_host.aactivate()).hresult == 0


@pytest.mark.asyncio
async def test_marked(kms_host):
    record("marked")
    assert (await kms_host.aactivate()).hresult == 0
    assert kms_host.counts()["windows"] == 25
"""

TEARDOWN_TESTS = """
import os


def note(kms_host):
    with open(os.environ["DATA_DIRS"], "a") as out:
        out.write(f"{kms_host.config.storage.data_dir}\\n")


def test_fails(kms_host):
    note(kms_host)
    assert kms_host.activate().hresult == 0
    assert False, "on purpose"


def test_interrupted(kms_host):
    note(kms_host)
    raise KeyboardInterrupt


def test_never_runs(kms_host):
    note(kms_host)
"""


def run_pytest(directory: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options],
        cwd=directory,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "runners"),
    [
        ("strict", {"sync other", "unmarked kms_host", "marked other"}),
        ("auto", {"sync other", "unmarked other", "marked other"}),
    ],
)
def test_every_test_runs_once_under_pytest_asyncio(
    tmp_path: Path, mode: str, runners: set[str]
) -> None:
    """Strict mode leaves the unmarked coroutine to the plugin; auto mode claims it."""
    (tmp_path / "test_lab.py").write_text(MODES_TESTS)
    log = tmp_path / "runs.log"
    options = ("-o", f"asyncio_mode={mode}", "-o", "asyncio_default_fixture_loop_scope=function")
    result = run_pytest(tmp_path, *options, RUNS_LOG=str(log))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted(runners)  # once each, by the expected runner


def test_a_failed_and_an_interrupted_test_stop_their_hosts(tmp_path: Path) -> None:
    (tmp_path / "test_lab.py").write_text(textwrap.dedent(TEARDOWN_TESTS))
    noted = tmp_path / "data-dirs.txt"
    result = run_pytest(tmp_path, DATA_DIRS=str(noted))
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert "on purpose" in result.stdout
    data_dirs = [Path(line) for line in noted.read_text().splitlines()]
    assert len(data_dirs) == 2  # the third test never started
    for data_dir in data_dirs:
        assert (data_dir / "kms-host.sqlite3").exists()
        assert not (data_dir / "runtime.json").exists()  # removed by a graceful stop only
        with hold_data_dir(data_dir):  # the daemon let its lock go
            pass
