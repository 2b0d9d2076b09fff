"""What ``kms-host bench`` says while it runs and what it leaves, and ``--cleanup``.

Tiny bounded runs against a real daemon on loopback (``running_host``), the CLI in a worker
thread; the client table is read back with ``kms-host clients``, as a user would.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_bench import running_host

from kms_host.bench import load as bench
from kms_host.bench.null_server import NullServer
from kms_host.cli.bench_report import progress_bar
from kms_host.cli.main import main

BENCH_NAME = "bench.lab.example"


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def _clients(capsys: pytest.CaptureFixture[str], data_dir: Path) -> list[dict[str, Any]]:
    _, out, _ = await _cli(capsys, "clients", "--data-dir", str(data_dir), "--json")
    listed: list[dict[str, Any]] = json.loads(out)
    return listed


@pytest.mark.asyncio
async def test_a_run_says_each_level_and_what_it_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_host(tmp_path) as (host, port):
        code, out, err = await _cli(
            capsys, "bench", f"{host}:{port}", "--mode", "fresh", "--concurrency", "1,2",
            "--requests", "5", "--pool", "3", "--json",
        )  # fmt: skip
        listed = await _clients(capsys, tmp_path)
    assert code == 0, err
    plan, first, second, left = err.strip().splitlines()
    assert plan.startswith(f"kms-host bench: 2 levels (fresh x 1, 2) against {host}:{port};")
    assert first.startswith("[1/2] fresh x1: kms-host ")
    assert "(5 verified, 0 errors," in first
    assert second.startswith("[2/2] fresh x2: kms-host ")
    assert left.startswith("kms-host bench: left 3 Windows clients in the target's client table")
    assert BENCH_NAME in left
    assert "--cleanup --data-dir DIR" in left
    document = json.loads(out)
    assert document["left_in_table"] == {
        "clients": 3,
        "exact": True,
        "app": "windows",
        "machine_name": BENCH_NAME,
        "removed": None,
        "data_dir": None,
    }
    assert len(listed) == 3  # the pool's three CMIDs, each level starting over it
    assert {client["machine_name"] for client in listed} == {BENCH_NAME}


@pytest.mark.asyncio
async def test_cleanup_removes_the_bench_clients_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_host(tmp_path) as (host, port):
        target = f"{host}:{port}"
        seed = ["clients", "seed", "--app", "windows", "--count", "1", "--data-dir", str(tmp_path)]
        code, _, err = await _cli(capsys, *seed)
        assert code == 0, err
        await _cli(capsys, "bench", target, "--mode", "keepalive", "--concurrency", "2",
                   "--requests", "4", "--pool", "4")  # fmt: skip
        assert len(await _clients(capsys, tmp_path)) == 5
        code, out, err = await _cli(
            capsys, "bench", target, "--mode", "fresh", "--concurrency", "1", "--requests", "2",
            "--pool", "2", "--json", "--cleanup", "--data-dir", str(tmp_path),
        )  # fmt: skip
        listed = await _clients(capsys, tmp_path)
        alone = await _cli(capsys, "bench", "--cleanup", "--data-dir", str(tmp_path))
    assert code == 0, err
    # This run's two clients and the earlier run's four: every row with the bench's name.
    assert json.loads(out)["left_in_table"]["removed"] == 6
    assert err.strip().splitlines()[-1] == (
        f"kms-host bench: removed 6 clients named {BENCH_NAME} from the client table in"
        f" {tmp_path} (2 sent by this run)"
    )
    assert [client["machine_name"] for client in listed] == ["seed-0001"]
    assert alone == (
        0,
        "",
        f"kms-host bench: removed 0 clients named {BENCH_NAME} from the client table in"
        f" {tmp_path}\n",
    )


@pytest.mark.asyncio
async def test_cleanup_without_a_table_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with NullServer() as null:
        host, port = null.address
        argv = ["bench", f"{host}:{port}", "--cleanup", "--data-dir", str(tmp_path / "nowhere")]
        code, out, err = await _cli(capsys, *argv)
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()  # no plan: the run never started
    assert line.startswith(f"kms-host bench: no client table in {tmp_path / 'nowhere'}")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--cleanup", "--null-server"],
        ["bench", "127.0.0.1:1688", "--data-dir", "somewhere"],
        ["bench", "--cleanup", "--config", "/nonexistent/kms-host.toml"],
    ],
)
def test_cleanup_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_terminal_bar_fills_with_time_or_budget() -> None:
    stream = io.StringIO()
    show = progress_bar(
        stream, "[1/2] fresh x8 kms-host", bench.BenchSettings("fresh", 8, 4.0, 100)
    )
    show(10, 0, 1.0)  # a quarter of the time, a tenth of the budget
    show(75, 5, 1.0)  # four fifths of the budget
    first, second = stream.getvalue().split("\r\x1b[K")[1:]
    assert first.startswith(f"[1/2] fresh x8 kms-host [{'#' * 6}{'.' * 18}] 10 ok, 0 errors")
    assert second.startswith(f"[1/2] fresh x8 kms-host [{'#' * 19}{'.' * 5}] 75 ok, 5 errors")
