"""A machine name made to attack the operator's terminal, through a real daemon to every view.

The names (the client's to choose, spec 4.1) hold ANSI sequences, a newline that would forge a
second log line, a carriage return, BEL, DEL, a C1 control (NEL) and a right-to-left override;
the second has no space, quote or line break, which the console renderer would have quoted.
The daemon runs as an operator runs it, with console logs; what reaches its stdout and the
text of ``kms-host clients`` and ``status`` must hold none of those characters raw, only their
escapes, while ``clients --json`` gives the name back intact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest
from reliability_host import WAIT_S, Daemon, request

from kms_host.cli.main import main
from kms_host.client.strict import KmsClient

HOSTILE = "pc\x1b[31mRED\x1b[0m\nforged line\r\x07\x7f\x85\u202egnp.exe"
ESCAPED = r"pc\x1b[31mRED\x1b[0m\nforged line\r\x07\x7f\x85\u202egnp.exe"
SNEAKY = "pc\x1b[2J\x1b[31mRED\x07\x7f\x85\u202egnp.exe"
SNEAKY_ESCAPED = r"pc\x1b[2J\x1b[31mRED\x07\x7f\x85\u202egnp.exe"


def raw_controls(text: str) -> set[str]:
    """Characters a terminal would act on, line ends aside."""
    return {char for char in text.replace("\n", "") if not char.isprintable()}


def view(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def kms_port(data_dir: Path) -> int:
    runtime = data_dir / "runtime.json"
    deadline = time.monotonic() + WAIT_S
    while not runtime.exists():
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    return int(json.loads(runtime.read_text("utf-8"))["tcp"][0].rsplit(":", 1)[1])


async def activate(port: int, *names: str) -> None:
    async with await KmsClient.connect("127.0.0.1", port) as client:
        for name in names:
            await client.activate(dataclasses.replace(request(uuid.uuid4()), machine_name=name))


def test_a_hostile_machine_name_reaches_no_view_raw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    daemon = Daemon(data, "--log-format", "console")
    try:
        asyncio.run(activate(kms_port(data), HOSTILE, SNEAKY))
        table = view(capsys, "clients", "--data-dir", str(data))
        as_json = view(capsys, "clients", "--data-dir", str(data), "--json")
        status = view(capsys, "status", "--data-dir", str(data))
    finally:
        assert daemon.stop() == 0
    lines = [event["line"] for event in daemon.events]
    first, second = [line for line in lines if line.split()[3:4] == ["activation"]]
    assert ESCAPED in first, first
    assert f"machine_name={SNEAKY_ESCAPED} " in second, second
    assert not any(line.startswith("forged line") for line in lines)
    assert not set().union(*map(raw_controls, lines))
    assert ESCAPED in table
    assert SNEAKY_ESCAPED in table
    assert not raw_controls(table)
    assert not raw_controls(status)
    assert not raw_controls(as_json)
    assert sorted(row["machine_name"] for row in json.loads(as_json)) == sorted([HOSTILE, SNEAKY])
