"""The README's exit-code tables, row by row, against what the commands really do.

The rows are read from README.md: each case names a phrase of its row and runs a command
that the phrase describes, so a row the commands contradict, a row without a case, and a
case whose row no longer says it all fail. One real daemon (``serve`` in a subprocess, on
127.0.0.1 port 0, with a scenario config) answers; most commands run in-process, as
``kms-host`` runs them; ``serve`` and ``activate`` run as processes (:data:`OWN_PROCESS`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_data_dir import Daemon, _run

from kms_host.cli.main import main

README = Path(__file__).parents[2] / "README.md"
ENTERPRISE_SKU = "73111121-5638-40f6-bc11-f1d7b0d64300"  # Windows 10/11 Enterprise (spec 8.6)
PROBE_CMID = "00000000-0000-4000-8000-000000001688"
CONFIG = f"""
[counting]
prefill = "none"
[dns]
listen = ["127.0.0.1:0"]
zone = "lab.example"
[[scenario]]
cmid = "{PROBE_CMID}"
sku = "{ENTERPRISE_SKU}"
hresult = "0xC004F042"
[[scenario]]
sku = "{ENTERPRISE_SKU}"
hresult = "0xC004F042"
[[scenario]]
machine_name = "corrupt-*"
corrupt = true
"""


OWN_PROCESS = frozenset({"serve", "activate"})
"""Commands that configure logging for the whole process: in-process, they would take over
the test process's logging (structlog's capture in later tests)."""


def exit_table(heading: str) -> dict[int, str]:
    """The first ``| Exit | Meaning |`` table after ``heading``: exit code -> meaning."""
    text = README.read_text("utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    table = section[section.index("| Exit | Meaning |") :].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def exit_of(argv: list[str]) -> int:
    """``kms-host ARGV``'s exit status, argparse's usage exits included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(autouse=True)
def _no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("KMS_HOST_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Daemon, str, str]]:
    """The daemon, its KMS address and its DNS address."""
    (tmp_path / "lab.toml").write_text(CONFIG)
    daemon = Daemon(tmp_path, "--config", "lab.toml", "--listen", "127.0.0.1:0")
    try:
        runtime = daemon.runtime(tmp_path / "data")
        yield daemon, runtime["tcp"][0], runtime["dns"][0]
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.fixture
def silent() -> Iterator[str]:
    """An address that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_every_row_of_the_commands_exit_table(
    tmp_path: Path,
    host: tuple[Daemon, str, str],
    silent: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon, address, _ = host
    data = ["--data-dir", str(tmp_path / "data")]
    (tmp_path / "bad.toml").write_text('[counting]\nmode = "bogus"\n')
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "kms-host.sqlite3").write_bytes(b"not a SQLite file " * 512)
    bad = str(tmp_path / "bad.toml")
    assert _run(tmp_path, "activate", address).returncode == 0  # one client for the views
    bench = ["bench", "--mode", "fresh", "--concurrency", "1"]
    cases: list[tuple[int, str, list[str]]] = [
        (0, "a view showed what was asked", ["status", *data]),
        (0, "a view showed what was asked", ["clients", *data]),
        (0, "a view showed what was asked", ["products", "Windows 10/11 Pro"]),
        (0, "`probe`'s host is healthy", ["probe", address]),
        (0, "`check-config`'s file is valid", ["check-config", "lab.toml"]),
        (0, "`bench` verified activations", [*bench, address, "--requests", "1"]),
        (1, "no client table there", ["status", "--data-dir", "nowhere"]),
        (1, "the client table is damaged", ["status", "--data-dir", "damaged"]),
        (
            1,
            "the client table is damaged",
            ["serve", "--data-dir", "damaged", "--listen", "127.0.0.1:0"],
        ),
        (1, "nothing matched", ["clients", *data, "--app", "office"]),
        (1, "nothing matched", ["products", "no such product at all"]),
        (1, "refused", ["probe", closed_port()]),
        (1, "timed out", ["probe", silent, "--timeout", "0.5"]),
        (1, "HRESULT 0x...", ["probe", address, "--product", ENTERPRISE_SKU]),
        (1, "address in use", ["serve", "--data-dir", "other", "--listen", address]),
        (1, "data dir held by another daemon", ["serve", "--listen", "127.0.0.1:0"]),
        (1, "`bench` verified none", [*bench, closed_port(), "--requests", "2", "--timeout", "1"]),
        (2, "a bad option", ["status", "--no-such-option"]),
        (2, "a bad option", ["probe", "127.0.0.1:0"]),
        (2, "`serve` would refuse", ["status", *data, "--config", bad]),
        (2, "`check-config` too", ["check-config", bad]),
        (2, "`check-config` too", ["check-config", "missing.toml"]),
        (2, "an unknown or ambiguous `--product`", ["probe", address, "--product", "Enterprise"]),
    ]
    monkeypatch.chdir(tmp_path)  # relative paths, as a user gives them
    rows = exit_table("### Exit codes")
    assert sorted(rows) == sorted({code for code, _, _ in cases})
    for code, phrase, argv in cases:
        assert phrase in rows[code], f"the README's row {code} no longer says {phrase!r}"
        capsys.readouterr()
        if argv[0] in OWN_PROCESS:
            served = _run(tmp_path, *argv)
            done, err = served.returncode, served.stderr
        else:
            done, err = exit_of(argv), capsys.readouterr().err
        assert done == code, f"{phrase!r}: {argv}: {err}"
        if code and argv[0] != "bench":  # bench's stderr is its progress
            assert len(err.strip().splitlines()) <= 1, err  # one line, if any, usage included
    daemon.stop(signal.SIGTERM)
    assert "`serve` stopped by SIGTERM or SIGINT" in rows[0]
    assert daemon.process.returncode == 0


def test_every_row_of_activates_exit_table(host: tuple[Daemon, str, str]) -> None:
    _, address, dns = host
    cases = {
        0: ["activate", address],
        1: ["activate", address, "--product", ENTERPRISE_SKU],
        2: ["activate", address, "--product", "no such product at all"],
        3: ["activate", address, "--require-activation"],  # prefill "none": count 2 of 25
        4: ["activate", address, "--machine-name", "corrupt-01"],
        5: ["activate", closed_port(), "--timeout", "2"],
        6: ["activate", "--discover", "nothing.lab.example", "--dns-server", dns],
    }
    rows = exit_table("## Testing your client")
    assert sorted(rows) == sorted(cases)
    for code, argv in cases.items():
        done = _run(Path.cwd(), *argv)
        assert done.returncode == code, f"README: {code} means {rows[code]}; {done.stderr}"


def test_the_console_script_exits_as_main_returns(tmp_path: Path) -> None:
    """The in-process runs above stand for the installed ``kms-host``: the same codes."""
    done = subprocess.run(
        [sys.executable, "-m", "kms_host", "status", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_every_serve_failure_is_one_line_on_stderr(
    tmp_path: Path, host: tuple[Daemon, str, str], log_format: str
) -> None:
    """Whatever the log format, the operator reads one line; the log keeps its own format."""
    _, address, _ = host
    cases: list[tuple[int, list[str], dict[str, str]]] = [
        (1, ["--data-dir", "w", "--workers", "2", "--listen", address], {}),
        (1, ["--data-dir", "m", "--listen", "127.0.0.1:0"], {"KMS_HOST_METRICS_LISTEN": address}),
        (1, ["--listen", "127.0.0.1:0"], {}),  # ./data is the running daemon's
        (2, ["--config", "missing.toml"], {}),
        (2, ["--data-dir", "e"], {"KMS_HOST_COUNTING_MODE": "bogus"}),
    ]
    for code, args, env in cases:
        done = _run(tmp_path, "serve", *args, "--log-format", log_format, env={**os.environ, **env})
        assert done.returncode == code, (args, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("kms-host: "), line
        assert "Traceback" not in done.stdout + done.stderr
        logged = done.stdout.strip().splitlines()
        if log_format == "json":
            assert all(json.loads(entry) for entry in logged)
        else:
            assert not any(entry.startswith("{") for entry in logged)
