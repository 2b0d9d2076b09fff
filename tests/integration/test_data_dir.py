"""The data dir as a user meets it: one daemon holds it, and the views report that daemon.

Each test runs ``kms-host`` as a user does, in a subprocess with its own working directory,
on 127.0.0.1 port 0 and a real SQLite file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 20.0


def _run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kms_host", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


class Daemon:
    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kms_host", "serve", "--log-format", "json", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def runtime(self, data_dir: Path) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        path = data_dir / "runtime.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            if path.exists():
                document: dict[str, Any] = json.loads(path.read_text())
                if document["pid"] == self.process.pid:
                    return document
            time.sleep(0.05)
        raise AssertionError("serve did not write runtime.json in time")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=30)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGKILL)


def test_status_without_options_reports_the_running_daemons_counting(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    (tmp_path / "none.toml").write_text('[counting]\nprefill = "none"\n[clock]\noffset_s = 3600\n')
    daemon = Daemon(tmp_path, "--config", "none.toml", "--listen", "127.0.0.1:0")
    daemons.append(daemon)
    runtime = daemon.runtime(tmp_path / "data")
    port = runtime["tcp"][0].rsplit(":", 1)[1]
    for _ in range(3):
        done = _run(tmp_path, "activate", f"127.0.0.1:{port}")
        assert done.returncode == 0, done.stdout + done.stderr
    status = _run(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["applications"]["windows"]["current_count"] == 3
    assert document["counting"]["prefill"] == "none"
    assert document["counting"]["clock_offset_s"] == 3600
    assert document["listen"] == ["127.0.0.1:0"]
    assert document["settings_from"] == f"daemon pid {daemon.process.pid}"
    text = _run(tmp_path, "status").stdout
    assert "configured: 127.0.0.1:0" in text
    assert "prefill none" in text
    assert runtime["settings"]["prefill"] == "none"
    assert runtime["settings"]["clock_offset_s"] == 3600
    # started_at is the real start, not shifted by the hour of [clock] offset_s
    started = datetime.fromisoformat(runtime["started_at"])
    assert abs((datetime.now(UTC) - started).total_seconds()) < 600


def test_a_second_serve_on_the_data_dir_exits_naming_the_holder(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    first = Daemon(tmp_path, "--listen", "127.0.0.1:0")
    daemons.append(first)
    first.runtime(tmp_path / "data")
    second = _run(tmp_path, "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.process.pid}" in lines[0]
    # the refused daemon left the holder's runtime.json alone
    status = json.loads(_run(tmp_path, "status", "--json").stdout)
    assert status["daemon"]["running"] is True
    assert status["daemon"]["pid"] == first.process.pid


def test_a_sigkilled_holders_lock_is_taken_over(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "--listen", "127.0.0.1:0")
    daemons.append(first)
    first.runtime(tmp_path / "data")
    first.stop(signal.SIGKILL)
    second = Daemon(tmp_path, "--listen", "127.0.0.1:0")
    daemons.append(second)
    assert second.runtime(tmp_path / "data")["pid"] == second.process.pid
    assert (tmp_path / "data" / "kms-host.lock").read_text().strip() == str(second.process.pid)


def test_workers_run_under_their_supervisors_lock(tmp_path: Path, daemons: list[Daemon]) -> None:
    supervisor = Daemon(tmp_path, "--listen", "127.0.0.1:0", "--workers", "2")
    daemons.append(supervisor)
    runtime = supervisor.runtime(tmp_path / "data")
    assert len(runtime["workers"]) == 2
    second = _run(tmp_path, "serve", "--listen", "127.0.0.1:0")
    assert second.returncode == 1
    assert f"pid {supervisor.process.pid}" in second.stderr
    supervisor.stop()
    assert supervisor.process.returncode == 0


@pytest.mark.parametrize("content", ["", "{not json", '{"version": 1, "epids": []}'])
def test_a_broken_identity_file_is_one_line_from_serve_and_status(
    tmp_path: Path, content: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "host-identity.json").write_text(content)
    served = _run(tmp_path, "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
    assert served.returncode == 1  # the data dir's fault, not the configuration's (README)
    assert "Traceback" not in served.stderr
    assert len(served.stderr.strip().splitlines()) == 1
    assert "host-identity.json" in served.stderr
    (data / "kms-host.sqlite3").touch()  # status reads the identity only beside a table
    status = _run(tmp_path, "status")
    assert status.returncode == 1
    assert "Traceback" not in status.stderr
    assert "host-identity.json" in status.stderr


def test_a_start_failure_is_one_line_on_stderr(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "--data-dir", "a", "--listen", "127.0.0.1:0")
    daemons.append(first)
    address = first.runtime(tmp_path / "a")["tcp"][0]
    for log_format in ("json", "console"):
        busy = _run(
            tmp_path, "serve", "--data-dir", "b", "--listen", address, "--log-format", log_format
        )
        assert busy.returncode == 1
        assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
        assert "start failed" in busy.stderr
        assert f"cannot listen on {address}: Address already in use" in busy.stderr


def test_a_read_only_data_dir_names_the_path_and_the_permission(tmp_path: Path) -> None:
    # As root, the daemon runs as nobody (setpriv): root writes into read-only directories.
    data = tmp_path / "ro"
    data.mkdir(mode=0o555)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    served = subprocess.run(
        [
            *(as_nobody if os.geteuid() == 0 else []),
            *(sys.executable, "-m", "kms_host", "serve", "--data-dir", str(data)),
        ],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode == 1, served.stderr
    assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert str(data) in served.stderr
    assert "permission denied" in served.stderr


def test_a_broken_runtime_file_is_one_line_from_status(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "kms-host.sqlite3").touch()
    (data / "runtime.json").write_text("{")
    status = _run(tmp_path, "status")
    assert status.returncode == 1
    assert "runtime.json" in status.stderr
    assert "Traceback" not in status.stderr


def test_a_fresh_hosts_status_count_is_the_count_a_client_is_told(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path, "--listen", "127.0.0.1:0")  # prefill = "threshold", the default
    daemons.append(daemon)
    address = daemon.runtime(tmp_path / "data")["tcp"][0]
    probe_cmid = "00000000-0000-4000-8000-000000001688"  # answered, never counted
    told = _run(tmp_path, "activate", address, "--cmid", probe_cmid, "--json")
    assert told.returncode == 0, told.stderr
    answer = json.loads(told.stdout.strip().splitlines()[0])
    status = json.loads(_run(tmp_path, "status", "--json").stdout)
    assert status["applications"]["windows"]["current_count"] == answer["count"] == 24


def test_clients_with_no_matching_rows_exits_1(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = Daemon(tmp_path, "--listen", "127.0.0.1:0")
    daemons.append(daemon)
    address = daemon.runtime(tmp_path / "data")["tcp"][0]
    assert _run(tmp_path, "activate", address).returncode == 0
    assert _run(tmp_path, "clients", "--app", "windows").returncode == 0
    for extra in ((), ("--json",)):
        empty = _run(tmp_path, "clients", "--app", "office", *extra)
        assert empty.returncode == 1, empty.stdout


def test_status_on_a_read_only_data_dir_names_the_path_and_the_permission(
    daemons: list[Daemon],
) -> None:
    # A directory nobody can reach (pytest's tmp root is private); as root, status runs as
    # nobody (setpriv): root writes into read-only directories.
    base = Path(tempfile.mkdtemp(prefix="kms-host-ro-"))
    try:
        base.chmod(0o755)
        daemon = Daemon(base, "--listen", "127.0.0.1:0")
        daemons.append(daemon)
        daemon.runtime(base / "data")
        daemon.stop()
        (base / "data").chmod(0o555)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        status = subprocess.run(
            [
                *(as_nobody if os.geteuid() == 0 else []),
                *(sys.executable, "-m", "kms_host", "status", "--data-dir", str(base / "data")),
            ],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 1, status.stdout
        assert len(status.stderr.strip().splitlines()) == 1, status.stderr
        assert str(base / "data") in status.stderr
        assert "permission denied" in status.stderr
    finally:
        (base / "data").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
