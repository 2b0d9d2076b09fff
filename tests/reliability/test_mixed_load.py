"""V4, V5 and V6 clients at once against one daemon: every one of them activates.

Each version has its own message protection (spec 5: V4's CMAC-style hash, V5's and V6's AES
with their own key and, for V6, the HMAC'd salt), all served by the same connections' code
and one client table. Strict clients of the three versions run side by side, each over fresh
connections with fresh CMIDs; none may fail, every answer is verified as a client would, and
the table ends with exactly one row per client. CI sends 300 per version, ``-m long`` 3000.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from reliability_host import REQUIRED, Daemon, Load

from kms_host.storage import open_store
from protocol.kms import ProtocolVersion

CLIENTS_PER_VERSION = 10
VERSIONS = (ProtocolVersion.V4, ProtocolVersion.V5, ProtocolVersion.V6)


async def mixed_load(tmp_path: Path, per_version: int, *extra: str) -> None:
    config = tmp_path / "kms-host.toml"
    config.write_text('[counting]\nprefill = "none"\n', encoding="utf-8")
    daemon = Daemon(tmp_path / "data", "--config", str(config), *extra)
    try:
        port = await asyncio.to_thread(daemon.port)
        load = Load(
            port,
            CLIENTS_PER_VERSION * len(VERSIONS),
            versions=VERSIONS,
            per_client=per_version // CLIENTS_PER_VERSION,
        )
        started = time.monotonic()
        load.start()
        await load.done()
        seconds = time.monotonic() - started
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    assert load.failures == []
    assert load.by_version == dict.fromkeys(VERSIONS, per_version)
    assert daemon.tracebacks() == []
    store = await open_store(tmp_path / "data")
    try:
        rows = {record.cmid: record for record in await store.clients(app="windows")}
        tally = await store.tally("windows", since=datetime.now(UTC) - timedelta(days=30))
    finally:
        await store.close()
    assert set(rows) == set(load.acked)
    versions = [record.protocol_version for record in rows.values()]
    assert sorted(set(versions)) == ["4.0", "5.0", "6.0"]
    assert all(versions.count(v) == per_version for v in set(versions))
    assert tally.live_clients == len(rows) == per_version * len(VERSIONS)
    assert max(load.acked.values()) == min(len(rows), 2 * REQUIRED)
    total = len(load.acked)
    print(
        f"\nmixed load {' '.join(extra) or 'single process'}: {total} activations"
        f" ({per_version} per version), {len(load.failures)} failures, {seconds:.1f} s"
    )


@pytest.mark.asyncio
async def test_v4_v5_and_v6_clients_at_once_all_activate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        await mixed_load(tmp_path, 300)


@pytest.mark.long
@pytest.mark.asyncio
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_v4_v5_and_v6_clients_at_once_all_activate_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    with capsys.disabled():
        await mixed_load(tmp_path, 3000, "--workers", workers)
