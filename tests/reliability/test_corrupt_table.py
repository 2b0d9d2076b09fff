"""A damaged client table at start: every command refuses it in one line, and leaves it be.

Three kinds of damage an operator meets: bytes that are not SQLite at all (a file overwritten,
a wrong file restored), a table cut short (a copy interrupted, a disk that filled), and a valid
SQLite file that is not a kms-host table (another program's database under our name). For
each, ``serve`` exits 1 (README, exit codes: a failure at run time) before it listens, and
``status``, ``clients`` and ``clients seed`` exit 1 too; each writes one line on stderr naming
the file and what to do (move it aside, or restore a backup), no traceback; and the file is
byte for byte what it was: the host never repairs or replaces a table it cannot read.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from reliability_host import WAIT_S, WIN10_KMS_ID, WIN10_PRO_SKU

from kms_host.cli.main import main
from kms_host.storage import DATABASE_FILE, Sighting, open_store

DAMAGES = ["garbage", "truncated", "foreign"]


async def _seeded(data: Path) -> None:
    store = await open_store(data)
    try:
        template = Sighting(
            app="windows",
            cmid=uuid.uuid4(),
            machine_name="template",
            sku_id=WIN10_PRO_SKU,
            kms_id=WIN10_KMS_ID,
            license_status=1,
            is_vm=False,
            required_client_count=25,
            protocol_version="6.0",
            peer="192.0.2.1:50000",
            hresult=0,
            seen_at=datetime.now(UTC),
            counted=True,
        )
        await store.seed(template, 2000)
    finally:
        await store.close()


def damaged(tmp_path: Path, damage: str) -> Path:
    """A data dir whose table has ``damage``; returns the table's path."""
    data = tmp_path / damage
    data.mkdir()
    table = data / DATABASE_FILE
    if damage == "garbage":
        table.write_bytes(random.Random(damage).randbytes(16384))
    elif damage == "truncated":
        asyncio.run(_seeded(data))
        with table.open("r+b") as cut:
            cut.truncate(table.stat().st_size // 2)
    else:
        with sqlite3.connect(table) as other:
            other.execute("CREATE TABLE clients (name TEXT, address TEXT)")
            other.execute("INSERT INTO clients VALUES ('someone', 'somewhere')")
        other.close()
    return table


def assert_one_line_refusal(stderr: str, table: Path) -> None:
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert str(table) in stderr
    assert "move it aside" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("damage", DAMAGES)
def test_serve_refuses_a_damaged_table(tmp_path: Path, damage: str) -> None:
    table = damaged(tmp_path, damage)
    before = table.read_bytes()
    served = subprocess.run(
        [
            *(sys.executable, "-m", "kms_host", "serve", "--listen", "127.0.0.1:0"),
            *("--data-dir", str(table.parent), "--log-format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert served.returncode == 1, served.stderr
    assert_one_line_refusal(served.stderr, table)
    assert '"event": "listening"' not in served.stdout
    assert '"event": "start_failed"' in served.stdout
    assert "Traceback" not in served.stdout
    assert table.read_bytes() == before


@pytest.mark.parametrize("damage", DAMAGES)
def test_the_views_refuse_a_damaged_table(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = damaged(tmp_path, damage)
    before = table.read_bytes()
    data = ["--data-dir", str(table.parent)]
    for argv in (
        ["status", *data],
        ["clients", *data],
        ["clients", "seed", "--app", "windows", "--count", "5", *data],
        ["clients", "reset", *data],
    ):
        capsys.readouterr()
        assert main(argv) == 1, argv
        assert_one_line_refusal(capsys.readouterr().err, table)
    assert table.read_bytes() == before
