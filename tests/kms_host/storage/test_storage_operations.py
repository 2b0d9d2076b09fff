"""What ``kms-host clients`` and the metrics need from the client table.

Synthetic clients (``seed``), the table's size, and telling the daemon that another process
wrote (``changed_elsewhere``); each on a real SQLite file, two stores sharing it where the
point is another process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sightings import windows_sighting

from kms_host.policy.activation import AppTally
from kms_host.storage import DATABASE_FILE, ClientStore, open_store
from kms_host.storage import sqlite_queries as queries
from kms_host.storage import sqlite_schema as schema
from kms_host.storage.sqlite_schema import v1_initial, v2_synthetic

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TEMPLATE = windows_sighting(
    0, seen_at=T0, cmid=uuid.UUID(int=0), machine_name="", license_status=1, peer="seed"
)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[ClientStore]:
    opened = await open_store(tmp_path)
    yield opened
    await opened.close()


@pytest.mark.asyncio
async def test_seed_adds_counted_synthetic_clients_numbered_per_app(store: ClientStore) -> None:
    first = await store.seed(TEMPLATE, 3)
    second = await store.seed(TEMPLATE, 2)
    await store.seed(dataclasses.replace(TEMPLATE, app="office", required_client_count=5), 1)
    assert len(set(first + second)) == 5
    rows = await store.clients(app="windows")
    assert sorted(r.machine_name for r in rows) == [f"seed-{n:04}" for n in range(1, 6)]
    assert all(r.synthetic and r.last_activated == T0 and r.request_count == 0 for r in rows)
    assert {r.cmid for r in rows} == set(first + second)
    assert [r.machine_name for r in await store.clients(app="office")] == ["seed-0001"]
    assert await store.tally("windows", since=T0 - timedelta(days=30)) == AppTally(5, 25)
    assert (await store.stats()).total == 0  # nothing was asked
    assert await store.sizes() == {"windows": 5, "office": 1}

    assert await store.forget(first[0]) == 1
    assert await store.reset("windows") == 4
    assert await store.sizes() == {"office": 1}


@pytest.mark.asyncio
async def test_real_clients_are_not_synthetic_and_refused_ones_are_rows(
    store: ClientStore,
) -> None:
    real = dataclasses.replace(TEMPLATE, cmid=uuid.uuid4(), machine_name="pc1")
    await store.record(real, since=T0)
    await store.record(
        dataclasses.replace(real, cmid=uuid.uuid4(), hresult=0xC004F042, counted=False),
        since=T0,
    )
    assert [r.synthetic for r in await store.clients()] == [False, False]
    assert await store.sizes() == {"windows": 2}


@pytest.mark.asyncio
async def test_changed_elsewhere_sees_only_other_connections(tmp_path: Path) -> None:
    daemon, cli = await open_store(tmp_path), await open_store(tmp_path)
    try:
        await daemon.record(dataclasses.replace(TEMPLATE, cmid=uuid.uuid4()), since=T0)
        assert not daemon.changed_elsewhere()  # its own write
        await cli.seed(TEMPLATE, 2)
        await daemon.record(dataclasses.replace(TEMPLATE, cmid=uuid.uuid4()), since=T0)
        assert daemon.changed_elsewhere()
        assert not daemon.changed_elsewhere()  # reported once
        await cli.stats()  # a read changes nothing
        await daemon.tally("windows", since=T0)
        assert not daemon.changed_elsewhere()
        assert await cli.reset("windows") == 4
        await daemon.tally("windows", since=T0)
        assert daemon.changed_elsewhere()
    finally:
        await cli.close()
        await daemon.close()


@pytest.mark.asyncio
async def test_changes_elsewhere_can_be_spaced_out(tmp_path: Path) -> None:
    # A worker of ``serve --workers`` hears of its siblings' writes at most once an interval.
    worker = await open_store(tmp_path, changes_interval_s=3600)
    sibling = await open_store(tmp_path)
    try:
        await sibling.seed(TEMPLATE, 1)
        await worker.tally("windows", since=T0)  # notes the first version it sees
        await sibling.seed(TEMPLATE, 1)
        await worker.tally("windows", since=T0)
        assert worker.changed_elsewhere()
        await sibling.seed(TEMPLATE, 1)
        await worker.tally("windows", since=T0)
        assert not worker.changed_elsewhere()  # noted, but within the hour
    finally:
        await sibling.close()
        await worker.close()


@pytest.mark.asyncio
async def test_writers_in_other_connections_wait_for_each_other(tmp_path: Path) -> None:
    # Two stores on one file contend for its write lock as two worker processes do: every
    # record waits its turn (busy timeout) instead of failing, and each tally is distinct.
    stores = [await open_store(tmp_path) for _ in range(2)]
    try:
        tallies = await asyncio.gather(
            *(
                stores[n % 2].record(dataclasses.replace(TEMPLATE, cmid=uuid.uuid4()), since=T0)
                for n in range(200)
            )
        )
    finally:
        for opened in stores:
            await opened.close()
    assert sorted(t.live_clients for t in tallies) == list(range(1, 201))


@pytest.mark.asyncio
async def test_a_version_1_table_gains_the_synthetic_column(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None) as conn:
        v1_initial(conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO clients VALUES ('windows', ?, 'old', ?, ?, 1, 0, 25, '6.0', 'p', 0,"
            " 0, 0, 0, 25, 1)",
            (str(uuid.uuid4()), str(TEMPLATE.sku_id), str(TEMPLATE.kms_id)),
        )
    conn.close()
    store = await open_store(tmp_path)
    try:
        [row] = await store.clients()
    finally:
        await store.close()
    assert (row.machine_name, row.synthetic) == ("old", False)


@pytest.mark.asyncio
async def test_version_3_drops_the_cmid_index_and_forget_still_finds_every_app(
    tmp_path: Path,
) -> None:
    cmid = uuid.uuid4()
    with sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None) as conn:
        v1_initial(conn)
        v2_synthetic(conn)
        conn.execute("PRAGMA user_version = 2")
        for app in ("windows", "office2013"):
            conn.execute(
                "INSERT INTO clients VALUES (?, ?, 'old', ?, ?, 1, 0, 25, '6.0', 'p', 0,"
                " 0, 0, 0, 25, 1, 0)",
                (app, str(cmid), str(TEMPLATE.sku_id), str(TEMPLATE.kms_id)),
            )
    conn.close()
    store = await open_store(tmp_path)
    try:
        assert await store.forget(cmid) == 2
        assert await store.clients() == []
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / DATABASE_FILE) as conn:
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()
    assert "clients_by_cmid" not in indexes
    assert {"clients_counting", "clients_by_last_seen"} <= indexes


def test_a_renewal_within_the_hour_leaves_the_hour_buckets_alone(tmp_path: Path) -> None:
    """Schema v4: the trigger moves a client between hour buckets only across hours.

    ``total_changes`` counts the rows that trigger programs write too: a renewal in the same
    hour writes its client row and its request counter, one in a later hour also takes the
    client from the old bucket and adds it to the new one. The tallies agree either way.
    """
    conn = schema.connect(tmp_path / DATABASE_FILE, "normal")
    try:
        schema.migrate(conn)
        since = T0 - timedelta(days=30)

        def renew(minutes: int) -> tuple[int, AppTally]:
            before = conn.total_changes
            sighting = windows_sighting(1, seen_at=T0 + timedelta(minutes=minutes))
            [tally] = queries.record_batch(conn, [(sighting, since)])
            assert isinstance(tally, AppTally)
            return conn.total_changes - before, tally

        assert renew(0)[0] == 3  # a new client: its row, the counter, its hour bucket
        assert renew(10) == (2, AppTally(live_clients=1, max_required_count=25))
        assert renew(50) == (2, AppTally(live_clients=1, max_required_count=25))
        assert renew(70) == (4, AppTally(live_clients=1, max_required_count=25))
        buckets = conn.execute(
            "SELECT hour - ? / 3600000000, clients FROM activations_by_hour ORDER BY hour",
            (queries.micros(T0),),
        ).fetchall()
    finally:
        conn.close()
    assert buckets == [(0, 0), (1, 1)]


def test_statement_journals_stay_in_memory(tmp_path: Path) -> None:
    """A batch's savepoint and statement journals never touch the disk (temp_store MEMORY).

    On disk they cost write calls per new client; a crash needs none of them, the WAL is
    what keeps committed records.
    """
    conn = schema.connect(tmp_path / DATABASE_FILE, "full")
    try:
        assert conn.execute("PRAGMA temp_store").fetchone() == (2,)  # 2 = MEMORY
    finally:
        conn.close()
