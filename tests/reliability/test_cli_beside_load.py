"""``kms-host clients forget/reset/seed`` in a loop beside a loaded host: nobody sees a lock.

The CLI opens the daemon's table from another process and writes to it (sqlite.py: WAL,
``BEGIN IMMEDIATE``, a busy timeout), while strict clients activate fresh CMIDs without
pause. Every CLI run must exit 0, every client must be answered with a verified success, and
"database is locked" must appear nowhere: not on the CLI's stderr, not in the daemon's log.
The CI run lasts a few seconds; ``-m long`` a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_host import WAIT_S, Daemon, Load

from kms_host.cli.main import main

CLIENTS = 8


def _args(action: str, load: Load) -> list[str]:
    if action == "forget":
        return ["forget", str(next(iter(load.acked)))]  # maybe gone already (a reset)
    if action == "reset":
        return ["reset", "--app", "windows"]
    return ["seed", "--app", "windows", "--count", "200"]


ACTIONS = ("forget", "seed", "reset", "seed")


def cli_processes(data: Path, seconds: float, load: Load) -> dict[str, int]:
    """``kms-host clients ACTION`` as processes, in turn, until ``seconds`` have passed."""
    runs = dict.fromkeys(ACTIONS, 0)
    deadline = time.monotonic() + seconds
    for action in itertools.cycle(ACTIONS):
        if time.monotonic() >= deadline:
            return runs
        done = subprocess.run(
            [
                *(sys.executable, "-m", "kms_host", "clients", *_args(action, load)),
                *("--data-dir", str(data)),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert "locked" not in done.stderr, done.stderr
        # forget exits 1 when a reset removed its CMID first: "no client with CMID".
        assert done.returncode == 0 or "no client with CMID" in done.stderr, done.stderr
        runs[action] += 1
    raise AssertionError("unreachable")


def cli_in_process(data: Path, seconds: float, load: Load) -> dict[str, int]:
    """The same commands through ``main``, as the console script runs them, many more a second."""
    runs = dict.fromkeys(ACTIONS, 0)
    deadline = time.monotonic() + seconds
    for action in itertools.cycle(ACTIONS):
        if time.monotonic() >= deadline:
            return runs
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["clients", *_args(action, load), "--data-dir", str(data)])
        assert "locked" not in err.getvalue(), err.getvalue()
        assert code == 0 or "no client with CMID" in err.getvalue(), err.getvalue()
        runs[action] += 1
    raise AssertionError("unreachable")


async def cli_beside_load(tmp_path: Path, seconds: float) -> None:
    config = tmp_path / "kms-host.toml"
    config.write_text('[counting]\nprefill = "none"\n', encoding="utf-8")
    data = tmp_path / "data"
    daemon = Daemon(data, "--config", str(config))
    try:
        port = await asyncio.to_thread(daemon.port)
        load = Load(port, CLIENTS)
        load.start()
        try:
            await asyncio.wait_for(load.first_ack.wait(), WAIT_S)
            processes, in_process = await asyncio.gather(
                asyncio.to_thread(cli_processes, data, seconds, load),
                asyncio.to_thread(cli_in_process, data, seconds, load),
            )
        finally:
            await load.stop()
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    assert load.failures == []
    assert daemon.tracebacks() == []
    locked = [e for e in daemon.events if "locked" in str(e)]
    assert locked == []
    assert [e for e in daemon.events if e.get("level") == "error"] == []
    reloads = [e for e in daemon.named("counts") if e["counts"]["windows"] >= 200]
    assert reloads, "the host never counted the seeded clients"
    print(
        f"\nCLI beside load, {seconds:.0f} s: as processes {processes}, in-process"
        f" {in_process}; {len(load.acked)} activations"
    )


@pytest.mark.asyncio
async def test_cli_writes_beside_a_loaded_host_see_no_lock(tmp_path: Path) -> None:
    await cli_beside_load(tmp_path, 6.0)


@pytest.mark.long
@pytest.mark.asyncio
async def test_cli_writes_beside_a_loaded_host_see_no_lock_long(tmp_path: Path) -> None:
    await cli_beside_load(tmp_path, 60.0)
