"""``serve --workers N``: processes sharing one port and one data dir.

The supervisor runs as an operator runs it, ``python -m kms_host serve`` on 127.0.0.1 port 0,
and its JSON lines (its own and its workers', on one stdout) are collected as they come.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from daemon_process import WAIT_S, Daemon, gone
from harness import make_request
from prometheus_client.parser import text_string_to_metric_families

from kms_host.addresses import ListenAddress
from kms_host.cli.main import main
from kms_host.client.strict import KmsClient
from kms_host.errors import ListenError
from kms_host.host.listener import reserve_addresses

CLIENTS = 40
"""Distinct CMIDs sent over fresh connections: with two workers, the chance that the kernel
gives every one of them to the same worker is 2**-39."""

PARALLEL = 8


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), pids


async def activate_all(port: int, cmids: list[uuid.UUID]) -> list[int]:
    """Activate each CMID over a fresh connection, some at once; the counts answered."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(cmid: uuid.UUID) -> int:
        async with gate, await KmsClient.connect("127.0.0.1", port) as client:
            result = await client.activate(make_request(cmid=cmid))  # verified as a client does
        assert result.hresult == 0, result
        assert result.response is not None
        assert result.response.client_machine_id == cmid
        return result.response.current_client_count

    return list(await asyncio.gather(*(one(cmid) for cmid in cmids)))


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert await asyncio.to_thread(main, [*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(autouse=True)
def _no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process CLI reads KMS_HOST_* like serve does; the tests give flags only."""
    for name in [n for n in os.environ if n.startswith("KMS_HOST_")]:
        monkeypatch.delenv(name)


@pytest.mark.asyncio
async def test_two_workers_share_the_port_the_table_and_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kms-host.toml"
    config.write_text('[counting]\nprefill = "none"\n[metrics]\nlisten = "127.0.0.1:0"\n')
    daemon = Daemon(tmp_path / "data", "--workers", "2", "--config", str(config))
    try:
        port = daemon.port()
        (started,) = daemon.named("workers_started")
        pids = started["pids"]
        assert started["addresses"] == [f"127.0.0.1:{port}"]

        counts = await activate_all(port, [uuid.uuid4() for _ in range(CLIENTS)])
        # Each answer is the tally of its own committed transaction, whichever worker gave it.
        assert sorted(counts) == list(range(1, CLIENTS + 1))
        activations = daemon.wait_count("activation", CLIENTS)
        assert {event["worker"] for event in activations} == {0, 1}
        assert {event["result"] for event in activations} == {"activated"}

        common = ("--data-dir", str(daemon.data_dir), "--config", str(config))
        status = await cli_json(capsys, "status", *common)
        assert status["applications"]["windows"]["current_count"] == CLIENTS
        daemon_info = status["daemon"]
        assert (daemon_info["pid"], daemon_info["workers"]) == (daemon.process.pid, pids)
        assert daemon_info["tcp"] == [f"127.0.0.1:{port}"]
        assert daemon_info["running"] is True
        assert await asyncio.to_thread(main, ["status", *common]) == 0
        assert f"running, pid {daemon.process.pid} (2 workers)" in capsys.readouterr().out

        (listening,) = daemon.named("listening")
        samples = await asyncio.to_thread(scrape, listening["metrics"][0])
        activated = [
            v
            for labels, v in samples["kms_host_activations_total"]
            if labels["result"] == "activated"
        ]
        assert sum(activated) == CLIENTS  # summed over both workers' files
        assert ({"app": "windows"}, CLIENTS) in samples["kms_host_current_count"]
        assert ({"app": "windows"}, CLIENTS) in samples["kms_host_clients"]

        daemon.process.send_signal(signal.SIGHUP)  # reaches every worker
        assert {e["worker"] for e in daemon.wait_count("scenario_reloaded", 2)} == {0, 1}
    finally:
        code = daemon.stop()
    assert code == 0
    wait_gone(pids)
    assert not (daemon.data_dir / "runtime.json").exists()
    exits = daemon.named("worker_exited")
    assert sorted((e["worker"], e["exit_code"], e["level"]) for e in exits) == [
        (0, 0, "info"),
        (1, 0, "info"),
    ]
    for name in ("worker_listening", "activation", "counts", "stopping", "worker_stopped"):
        assert all("worker" in event for event in daemon.named(name)), name
    for name in ("config", "workers_started", "listening", "stopped"):
        assert [event for event in daemon.named(name) if "worker" in event] == [], name
    assert daemon.events[-1]["event"] == "stopped"


def test_a_killed_worker_stops_the_host_with_exit_status_one(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", "--workers", "2")
    try:
        daemon.port()
        (started,) = daemon.named("workers_started")
        os.kill(started["pids"][1], signal.SIGKILL)
        code = daemon.process.wait(timeout=WAIT_S)
    finally:
        daemon.stop()
    assert code == 1
    killed, other = daemon.wait_count("worker_exited", 2)
    assert (killed["worker"], killed["pid"], killed["level"]) == (1, started["pids"][1], "error")
    assert (killed["exit_code"], killed["signal"]) == (None, "SIGKILL")
    assert (other["worker"], other["exit_code"]) == (0, 0)  # stopped gracefully
    assert daemon.named("workers_failed")
    wait_gone(started["pids"])
    assert not (daemon.data_dir / "runtime.json").exists()


def test_workers_stop_on_their_own_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", "--workers", "2")
    try:
        daemon.port()
        (started,) = daemon.named("workers_started")
    finally:
        daemon.stop(signal.SIGKILL)
    wait_gone(started["pids"])
    assert {event["worker"] for event in daemon.wait_count("supervisor_gone", 2)} == {0, 1}


def test_one_worker_is_the_single_process_host(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", "--workers", "1")
    try:
        daemon.port()
    finally:
        assert daemon.stop() == 0
    assert daemon.named("workers_started") == []
    assert [event for event in daemon.events if "worker" in event] == []


def test_check_config_validates_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kms-host.toml"
    path.write_text("[server]\nworkers = 65\n")
    assert main(["check-config", str(path)]) == 2
    assert "server.workers: must be from 1 to 64, got 65" in capsys.readouterr().err
    path.write_text("[server]\nworkers = 64\n")
    assert main(["check-config", str(path)]) == 0


def test_a_reservation_settles_port_zero_for_reuse_port_listeners() -> None:
    (reserved,) = reserve_addresses((ListenAddress("127.0.0.1", 0),))
    port = reserved.getsockname()[1]
    listeners = [socket.create_server(("127.0.0.1", port), reuse_port=True) for _ in range(2)]
    reserved.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # Something listens there: a second host fails to start, as a single process would.
        with pytest.raises(ListenError) as info:
            reserve_addresses((ListenAddress("127.0.0.1", port),))
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    finally:
        for listener in listeners:
            listener.close()


@pytest.mark.asyncio
async def test_the_supervisor_serves_the_dashboard_from_the_shared_table(tmp_path: Path) -> None:
    """Counts and clients are the table's, whichever worker answered; the feed says it is off."""
    config = tmp_path / "kms-host.toml"
    config.write_text('[web]\nlisten = "127.0.0.1:0"\n[counting]\nprefill = "none"\n')
    daemon = Daemon(tmp_path / "data", "--workers", "2", "--config", str(config))
    try:
        port = daemon.port()
        (listening,) = daemon.named("listening")
        (web,) = listening["web"]
        cmids = [uuid.uuid4() for _ in range(CLIENTS)]
        await activate_all(port, cmids)

        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://{web}{path}", timeout=5) as response:
                return json.loads(response.read())

        status = await asyncio.to_thread(get, "/api/status")
        clients = await asyncio.to_thread(get, "/api/clients?app=windows&limit=1000")
        feed = await asyncio.to_thread(get, "/api/activations")
    finally:
        assert daemon.stop() == 0
    assert status["applications"]["windows"]["current_count"] == CLIENTS
    assert len(status["daemon"]["workers"]) == 2
    assert {row["cmid"] for row in clients["clients"]} == {str(cmid) for cmid in cmids}
    assert feed == {"available": False, "activations": []}
