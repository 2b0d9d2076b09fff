"""``kms-host bench`` against a real daemon and the null ceiling server, on loopback.

Tiny bounded runs (a few activations each): the report's shape, verified activations, errors
counted by kind, JSON output. Speed is what the benchmark measures; nothing here times it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from kms_host.bench import load as bench
from kms_host.bench.null_server import NullServer, canned_exchanges
from kms_host.cli.main import main
from kms_host.config import ConfigOverrides, load_config
from kms_host.host.app import BoundAddresses, serve
from protocol.kms import ProtocolVersion, build_request

V6 = ((ProtocolVersion.V6, 1),)
MIX = bench.parse_mix("4:1,5:1,6:2")


@contextlib.asynccontextmanager
async def running_host(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """A real daemon on 127.0.0.1, port 0, with its own data dir; stopped gracefully."""
    config = load_config(
        None, env={}, overrides=ConfigOverrides(listen=("127.0.0.1:0",), data_dir=tmp_path)
    )
    stop = asyncio.Event()
    ready: asyncio.Future[BoundAddresses] = asyncio.get_running_loop().create_future()
    with structlog.testing.capture_logs():
        task = asyncio.create_task(
            serve(config, shutdown_trigger=stop.wait, on_ready=ready.set_result)
        )
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        host, port = ready.result().tcp[0]
        try:
            yield host, port
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)


def settings(mode: bench.Mode, concurrency: int = 2, requests: int = 6) -> bench.BenchSettings:
    return bench.BenchSettings(mode, concurrency, duration_s=30.0, max_requests=requests)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["fresh", "keepalive"])
async def test_verified_activations_against_a_real_daemon(tmp_path: Path, mode: bench.Mode) -> None:
    pool = bench.build_pool(MIX, size=8, distinct=True, null=False)
    async with running_host(tmp_path) as (host, port):
        result = await bench.run_level(
            host, port, settings(mode), pool, target="kms-host", server_pid=os.getpid()
        )
    assert (result.ok, dict(result.errors)) == (6, {})
    assert len(result.latencies) == 6
    report = result.as_dict()
    assert report["activations"] == 6
    assert report["mode"] == mode
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert report["server_peak_rss_kib"] > 0
    assert report["server_cpu_share"] >= 0  # this process's CPU: the daemon runs in it


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["fresh", "keepalive"])
async def test_the_null_server_answers_canned_requests_that_verify(mode: bench.Mode) -> None:
    pool = bench.build_pool(MIX, size=8, distinct=True, null=True)
    assert {pending.wire for pending in pool} == {
        exchange.pending.wire for exchange in canned_exchanges().values()
    }
    async with NullServer() as server:
        result = await bench.run_level(*server.address, settings(mode, 3, 9), pool, target="null")
    assert (result.ok, dict(result.errors)) == (9, {})


@pytest.mark.asyncio
async def test_a_reply_that_fails_verification_is_an_error() -> None:
    # Fresh requests get the null server's canned reply to another request: CMID not echoed.
    pool = bench.build_pool(V6, size=2, distinct=True, null=False)
    async with NullServer() as server:
        result = await bench.run_level(*server.address, settings("keepalive"), pool, target="x")
    assert result.ok == 0
    assert result.errors == {"verify": 6}


@pytest.mark.asyncio
async def test_refusals_are_counted_by_hresult(tmp_path: Path) -> None:
    (pending,) = bench.build_pool(V6, size=1, distinct=False, null=False)
    skewed = replace(pending.request, request_time=pending.request.request_time // 2)
    pool = [build_request(skewed, rng=os.urandom)]  # a client clock centuries off
    async with running_host(tmp_path) as (host, port):
        result = await bench.run_level(host, port, settings("fresh"), pool, target="kms-host")
    assert result.ok == 0
    ((kind, count),) = result.errors.items()
    assert (kind, count) == ("hresult_0xC004F06C", 6)


@pytest.mark.asyncio
async def test_an_unreachable_target_counts_connect_errors() -> None:
    async with NullServer() as server:
        host, port = server.address
    pool = bench.build_pool(V6, size=1, distinct=False, null=True)
    result = await bench.run_level(host, port, settings("fresh", 1, 3), pool, target="gone")
    assert (result.ok, dict(result.errors)) == (0, {"connect": 3})
    assert result.as_dict()["latency_ms"]["p99"] == 0


@pytest.mark.asyncio
async def test_a_level_stops_at_its_deadline_and_reports_progress() -> None:
    pool = bench.build_pool(V6, size=1, distinct=False, null=True)
    short = bench.BenchSettings("keepalive", 2, duration_s=0.7, max_requests=10_000_000)
    ticks: list[tuple[int, int, float]] = []
    async with NullServer() as server:
        result = await bench.run_level(
            *server.address,
            short,
            pool,
            target="null",
            progress=lambda ok, errors, elapsed: ticks.append((ok, errors, elapsed)),
        )
    assert result.ok > 0
    assert not result.errors
    assert ticks
    assert all(ok <= result.ok and errors == 0 for ok, errors, _ in ticks)


@pytest.mark.asyncio
async def test_cli_json_report_with_the_null_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_host(tmp_path) as (host, port), NullServer() as null:
        null_host, null_port = null.address
        argv = ["bench", f"{host}:{port}", "--ceiling", f"{null_host}:{null_port}", "--json"]
        argv += ["--concurrency", "1,2", "--requests", "4", "--mix", "5:1,6:1"]
        argv += ["--server-pid", str(os.getpid()), "--ceiling-pid", str(os.getpid())]
        argv += ["--cmids", "repeated"]
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"machine", "settings", "levels", "ratios", "left_in_table"}
    assert report["left_in_table"]["clients"] == 1  # --cmids repeated: one client
    assert report["settings"]["mix"] == {"5": 1, "6": 1}
    assert [(lv["target"], lv["mode"], lv["concurrency"]) for lv in report["levels"]] == [
        (target, mode, concurrency)
        for mode in ("fresh", "keepalive")
        for concurrency in (1, 2)
        for target in ("kms-host", "null")
    ]
    assert all(lv["activations"] == 4 and lv["errors"] == {} for lv in report["levels"])
    assert len(report["ratios"]) == 4
    for ratio in report["ratios"]:
        assert ratio["fraction_of_null"] > 0
        assert set(ratio) == {
            "mode",
            "concurrency",
            "fraction_of_null",
            "null_projected_per_s",
            "fraction_of_null_projected",
            "host_cpu_us_per_activation",
            "generator_cpu_us_per_activation",
            "fraction_by_cpu",
        }
        host_cpu, generator_cpu = (
            ratio["host_cpu_us_per_activation"],
            ratio["generator_cpu_us_per_activation"],
        )
        # Both sides are this process here, and 4 calls may take under one CPU tick: only
        # the arithmetic, and None when a side has no CPU time to divide.
        if host_cpu and generator_cpu:
            assert ratio["fraction_by_cpu"] == pytest.approx(generator_cpu / host_cpu, abs=1e-3)
        else:
            assert ratio["fraction_by_cpu"] is None


def test_slices_of_a_level_merge_into_one_result() -> None:
    first = bench.LevelResult("kms-host", "fresh", 8, ok=3, elapsed_s=1.0, client_cpu_s=0.5)
    first.errors["timeout"] = 1
    first.latencies += [0.1, 0.2, 0.3]
    first.server_peak_rss_kib, first.server_cpu_s = 50_000, 0.9
    second = bench.LevelResult("kms-host", "fresh", 8, ok=5, elapsed_s=2.0, client_cpu_s=0.25)
    second.errors["timeout"] = 2
    second.latencies += [0.4] * 5
    second.server_peak_rss_kib, second.server_cpu_s = 52_000, 1.8
    merged = first.merged(second)
    assert (merged.ok, merged.taken, merged.elapsed_s) == (8, 11, 3.0)
    assert merged.rate == 8 / 3.0
    assert merged.errors == {"timeout": 3}
    assert merged.latencies == [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert (merged.client_cpu_s, merged.server_cpu_s) == (0.75, pytest.approx(2.7))
    assert merged.server_peak_rss_kib == 52_000
    assert first.merged(bench.LevelResult("kms-host", "fresh", 8)).server_cpu_s is None


@pytest.mark.asyncio
async def test_sliced_levels_alternate_and_keep_clients_distinct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_host(tmp_path / "data") as (host, port), NullServer() as null:
        null_host, null_port = null.address
        argv = ["bench", f"{host}:{port}", "--ceiling", f"{null_host}:{null_port}", "--json"]
        argv += ["--mode", "fresh", "--concurrency", "1", "--requests", "7", "--pool", "7"]
        code = await asyncio.to_thread(main, [*argv, "--rounds", "3", "--protocol", "6"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [(lv["target"], lv["activations"]) for lv in report["levels"]] == [
        ("kms-host", 7),  # 3 + 2 + 2 over the three slices: --requests in all
        ("null", 7),
    ]
    # Each slice went on through the pool: seven requests, seven distinct clients.
    code = await asyncio.to_thread(
        main, ["clients", "--data-dir", str(tmp_path / "data"), "--json"]
    )
    assert code == 0
    listed = json.loads(capsys.readouterr().out)
    assert len({client["cmid"] for client in listed}) == 7
    assert all(client["request_count"] == 1 for client in listed)


@pytest.mark.asyncio
async def test_cli_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_host(tmp_path) as (host, port):
        argv = ["bench", f"{host}:{port}", "--mode", "keepalive", "--concurrency", "2"]
        code = await asyncio.to_thread(main, [*argv, "--requests", "3", "--protocol", "4"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["target", "mode", "conc", "act/s"]
    assert lines[2].split()[:3] == ["kms-host", "keepalive", "2"]


@pytest.mark.parametrize(
    "argv",
    [
        ["bench"],
        ["bench", "127.0.0.1:1688", "--duration", "0"],
        ["bench", "127.0.0.1:1688", "--requests", "0"],
    ],
)
def test_cli_usage_errors(argv: list[str]) -> None:
    assert main(argv) == 2


def test_cli_rejects_bad_options() -> None:
    for bad in (["--concurrency", "0"], ["--mix", "7:1"], ["--mix", "6:0"], ["--mix", "6,6"]):
        with pytest.raises(SystemExit):
            main(["bench", "127.0.0.1:1688", *bad])
    with pytest.raises(SystemExit):
        main(["bench", "no-port"])


def test_null_server_command_serves_until_terminated() -> None:
    command = [
        sys.executable,
        "-m",
        "kms_host",
        "bench",
        "--null-server",
        "--listen",
        "127.0.0.1:0",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("null ceiling server listening on 127.0.0.1:")
            port = int(line.rsplit(":", 1)[1])
            pool = bench.build_pool(V6, size=1, distinct=False, null=True)
            result = asyncio.run(
                bench.run_level("127.0.0.1", port, settings("fresh", 1, 2), pool, target="null")
            )
            assert result.ok == 2
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0


def test_mix_parsing_and_spreading() -> None:
    assert bench.parse_mix("6") == ((ProtocolVersion.V6, 1),)
    mix = bench.parse_mix("4:1,5:1,6:8")
    pool = bench.build_pool(mix, size=20, distinct=True, null=True)
    versions = [pending.request.version.value for pending in pool]
    assert sorted(versions) == [4, 5] + [6] * 8
    assert versions[:2] != [4, 5]  # spread out, not in blocks


def test_distinct_and_repeated_cmids() -> None:
    distinct = bench.build_pool(MIX, size=12, distinct=True, null=False)
    repeated = bench.build_pool(MIX, size=12, distinct=False, null=False)
    assert len({p.request.client_machine_id for p in distinct}) == 12
    assert len({p.request.client_machine_id for p in repeated}) == 1
    assert len(repeated) == 4  # one mix cycle


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert [bench.percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert bench.percentile([], 50) == 0
    assert bench.percentile([3.0], 1) == 3


def test_peak_rss_and_cpu_of_this_process_and_of_none() -> None:
    rss = bench.peak_rss_kib(os.getpid())
    assert rss is not None
    assert rss > 1000
    cpu = bench.cpu_seconds(os.getpid())
    assert cpu is not None
    assert cpu > 0
    assert bench.peak_rss_kib(2**22 + 7) is None
    assert bench.cpu_seconds(2**22 + 7) is None
