"""The daemon as an operator runs it: a real process, signals, restarts.

These start ``python -m kms_host serve`` as a subprocess, read the port from its JSON
``listening`` line, and talk to it over loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from harness import make_request, run_host

from kms_host.client.strict import KmsClient
from kms_host.storage import open_store


def start_daemon(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    process, listening = start_daemon_listening(data_dir, *extra)
    return process, int(listening["addresses"][0].rsplit(":", 1)[1])


def start_daemon_listening(
    data_dir: Path, *extra: str
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``kms-host serve`` on 127.0.0.1:0; return it with its ``listening`` event."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kms_host",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--log-format",
            "json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for event in json_lines(process.stdout):
        if event["event"] == "listening":
            return process, event
    stop(process)
    raise AssertionError("the daemon exited before listening")


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> str:
    """Signal the daemon, wait for it, and return the rest of its output."""
    process.send_signal(signum)
    out, _ = process.communicate(timeout=15)
    return out


def json_lines(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for line in stream:
        yield json.loads(line)


async def activate(port: int, cmid: uuid.UUID) -> int:
    async with await KmsClient.connect("127.0.0.1", port) as client:
        result = await client.activate(make_request(cmid=cmid))
    assert result.response is not None
    return result.response.current_client_count


@pytest.mark.asyncio
async def test_counts_and_table_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cmids = [uuid.uuid4() for _ in range(4)]
    process, port = start_daemon(data, "--config", str(write_config(tmp_path)))
    try:
        assert [await activate(port, c) for c in cmids[:3]] == [1, 2, 3]
    finally:
        stop(process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    process, port = start_daemon(data, "--config", str(write_config(tmp_path)))
    try:
        assert await activate(port, cmids[0]) == 3
        assert await activate(port, cmids[3]) == 4
    finally:
        stop(process)
    store = await open_store(data)
    try:
        records = await store.clients()
    finally:
        await store.close()
    assert {r.cmid for r in records} == set(cmids)
    assert {r.cmid: r.request_count for r in records}[cmids[0]] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_the_daemon_serves_on_either_event_loop(tmp_path: Path, event_loop: str) -> None:
    """uvloop is the test extra's, so both loops a user can pick run here (kms_host/loop.py)."""
    config = tmp_path / "kms-host.toml"
    config.write_text(f'[server]\nevent_loop = "{event_loop}"\n', encoding="utf-8")
    process, listening = start_daemon_listening(tmp_path / "data", "--config", str(config))
    assert listening["event_loop"] == event_loop
    port = int(listening["addresses"][0].rsplit(":", 1)[1])
    try:
        counts = [await activate(port, uuid.uuid4()) for _ in range(3)]
    finally:
        out = stop(process)
    assert counts == [25, 26, 27]
    assert process.returncode == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["result"] for e in events if e["event"] == "activation"] == ["activated"] * 3
    assert events[-1]["event"] == "stopped"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "kms-host.toml"
    path.write_text('[counting]\nprefill = "none"\n', encoding="utf-8")
    return path


@pytest.mark.asyncio
async def test_sigterm_stops_gracefully_with_exit_zero(tmp_path: Path) -> None:
    process, port = start_daemon(tmp_path / "data")
    await activate(port, uuid.uuid4())
    out = stop(process)
    assert process.returncode == 0
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events[-2:] == ["stopping", "stopped"]


@pytest.mark.asyncio
async def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[server]\nidle_timeout_s = 1\n") as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        closed = await asyncio.wait_for(reader.read(1), 5)
        writer.close()
    assert closed == b""
    assert host.events("connection_idle_timeout")


@pytest.mark.asyncio
async def test_connections_over_the_limit_are_refused(tmp_path: Path) -> None:
    async with run_host(tmp_path, "[server]\nmax_connections = 2\n") as host:
        held = [await asyncio.open_connection("127.0.0.1", host.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        for _, w in [*held, (reader, writer)]:
            w.close()
    (event,) = host.events("connection_refused")
    assert event["reason"] == "max_connections"


def test_bad_config_stops_the_start_with_the_key_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nidle_timeout_s = -1\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "kms_host", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "KMS_HOST_STORAGE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 2
    assert "server.idle_timeout_s" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "kms_host", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 2
    assert "server.idle_timeout_s" in check.stderr


@pytest.mark.asyncio
async def test_listening_on_ipv6_any_is_dual_stack(tmp_path: Path) -> None:
    # "[::]" takes IPv4 clients too, as the default [::]:1688 does.
    async with run_host(tmp_path, listen="[::]:0") as host:
        for address in ("127.0.0.1", "::1"):
            async with await KmsClient.connect(address, host.port) as client:
                result = await client.activate(make_request())
            assert result.hresult == 0
    peers = [event["peer"] for event in host.events("activation")]
    assert peers[0].startswith("127.0.0.1:")
    assert peers[1].startswith("[::1]:")
