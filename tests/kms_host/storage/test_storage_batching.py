"""Grouped commits: concurrent records share a transaction, and nobody hears of a lost row.

COMMITs are counted with ``sqlite3``'s own trace callback on the store's worker connection,
and failures are real SQLite failures (a deferred foreign key that fails at COMMIT, a trigger
that aborts one statement), so these tests observe what the database did, not a stand-in.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sightings import cmid, windows_sighting

from kms_host.batching import IDLE_TURN_S
from kms_host.errors import StorageError
from kms_host.policy.activation import AppTally
from kms_host.storage import DATABASE_FILE, Sighting
from kms_host.storage.sqlite import RECORD_BATCH, SqliteClientStore

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)

POISON = "poison.lab.example"
"""A machine name that the test triggers below turn into a failure."""


def sighting(n: int, **changes: Any) -> Sighting:
    return windows_sighting(n, **{"seen_at": T0, **changes})


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteClientStore]:
    opened = await SqliteClientStore.open(tmp_path / DATABASE_FILE)
    yield opened
    await opened.close()


async def trace(store: SqliteClientStore) -> list[str]:
    """Every statement the worker connection runs from now on, as SQLite reports it."""
    statements: list[str] = []

    def install(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await store._submit(install)
    return statements


async def run_sql(store: SqliteClientStore, *statements: str) -> None:
    """Change the schema on the worker connection itself (it alone runs store jobs)."""

    def job(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    await store._submit(job)


def stored_cmids(tmp_path: Path) -> set[uuid.UUID]:
    """What is on disk, read by a connection of its own."""
    with sqlite3.connect(tmp_path / DATABASE_FILE) as conn:
        return {uuid.UUID(row[0]) for row in conn.execute("SELECT cmid FROM clients")}


@pytest.mark.asyncio
async def test_concurrent_records_share_commits(store: SqliteClientStore) -> None:
    statements = await trace(store)
    tallies = await asyncio.gather(*(store.record(sighting(n), since=T0) for n in range(200)))
    # Each job's tally is taken after its own write, in arrival order, within the batch.
    assert sorted(tally.live_clients for tally in tallies) == list(range(1, 201))
    assert await store.tally("windows", since=T0) == AppTally(200, 25)
    commits = statements.count("COMMIT")
    assert commits == -(-200 // RECORD_BATCH)  # all 200 queued at once: full batches
    assert statements.count("BEGIN IMMEDIATE") == commits
    # Nothing failed: one SAVEPOINT per batch, none per record.
    assert statements.count("SAVEPOINT batch") == commits
    assert statements.count("SAVEPOINT record") == 0
    assert (await store.stats()).total == 200


@pytest.mark.asyncio
async def test_a_failed_commit_fails_its_whole_batch_and_only_it(
    store: SqliteClientStore, tmp_path: Path
) -> None:
    # A deferred foreign key is checked at COMMIT: the poisoned batch fails there, for real.
    await run_sql(
        store,
        "PRAGMA foreign_keys = ON",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (ref INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        f"""CREATE TRIGGER poison AFTER INSERT ON clients WHEN new.machine_name = '{POISON}'
        BEGIN INSERT INTO child VALUES (1); END""",
    )
    statements = await trace(store)
    sightings = [sighting(n) for n in range(200)]
    sightings[100] = sighting(100, machine_name=POISON)
    outcomes = await asyncio.gather(
        *(store.record(s, since=T0) for s in sightings), return_exceptions=True
    )

    failed = {cmid(n) for n, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)}
    acknowledged = {cmid(n) for n, outcome in enumerate(outcomes) if isinstance(outcome, AppTally)}
    assert all(
        isinstance(outcome, AppTally)
        or (isinstance(outcome, StorageError) and "FOREIGN KEY" in str(outcome))
        for outcome in outcomes
    )
    # The batch that held record 100 (the second of 64) failed whole; the others committed.
    assert failed == {cmid(n) for n in range(RECORD_BATCH, 2 * RECORD_BATCH)}
    assert statements.count("COMMIT") == 4
    assert statements.count("ROLLBACK") == 1
    # No acknowledged row is missing, and no failed one was half-kept.
    on_disk = stored_cmids(tmp_path)
    assert acknowledged <= on_disk
    assert not failed & on_disk
    tallies = sorted(outcome.live_clients for outcome in outcomes if isinstance(outcome, AppTally))
    assert tallies == list(range(1, len(acknowledged) + 1))
    # The store carries on.
    assert (await store.record(sighting(500), since=T0)).live_clients == len(acknowledged) + 1


@pytest.mark.asyncio
async def test_one_failing_record_does_not_sink_its_batch(
    store: SqliteClientStore, tmp_path: Path
) -> None:
    # The client row is written, then the counters' statement aborts: the SAVEPOINT must
    # take that row back while its neighbours in the same transaction commit.
    await run_sql(
        store,
        """CREATE TRIGGER poison BEFORE INSERT ON request_stats WHEN new.license_status = 99
        BEGIN SELECT RAISE(ABORT, 'poisoned counter'); END""",
    )
    statements = await trace(store)
    sightings = [sighting(n) for n in range(10)]
    sightings[3] = sighting(3, license_status=99)
    naive = datetime(2024, 5, 1, 12)  # a bug the store must refuse
    sightings[6] = sighting(6, seen_at=naive)
    outcomes = await asyncio.gather(
        *(store.record(s, since=T0) for s in sightings), return_exceptions=True
    )

    assert isinstance(outcomes[3], StorageError)
    assert "poisoned counter" in str(outcomes[3])
    assert isinstance(outcomes[6], ValueError)  # not a storage error: the caller's bug
    tallies = [outcome for n, outcome in enumerate(outcomes) if n not in (3, 6)]
    assert sorted(t.live_clients for t in tallies if isinstance(t, AppTally)) == list(range(1, 9))
    assert statements.count("COMMIT") == 1
    # The batch's first pass was undone and the batch written again, a SAVEPOINT per record.
    assert statements.count("ROLLBACK TO batch") == 1
    assert statements.count("SAVEPOINT record") == 10
    assert stored_cmids(tmp_path) == {cmid(n) for n in range(10)} - {cmid(3), cmid(6)}
    assert (await store.stats()).total == 8


@pytest.mark.asyncio
async def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    store = await SqliteClientStore.open(tmp_path / DATABASE_FILE)
    pending = [asyncio.ensure_future(store.record(sighting(n), since=T0)) for n in range(20)]
    await asyncio.sleep(0)  # queued, not yet written
    await store.close()
    tallies = [task.result() for task in pending]  # all done: close() waited for them
    assert sorted(tally.live_clients for tally in tallies) == list(range(1, 21))
    assert stored_cmids(tmp_path) == {cmid(n) for n in range(20)}
    with pytest.raises(StorageError, match="closed"):
        await store.record(sighting(99), since=T0)


@pytest.mark.asyncio
async def test_a_cancelled_record_still_queued_is_not_written(
    store: SqliteClientStore, tmp_path: Path
) -> None:
    tasks = [asyncio.ensure_future(store.record(sighting(n), since=T0)) for n in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert stored_cmids(tmp_path) == {cmid(n) for n in (0, 1, 3, 4)}


async def busy_arrivals(store: SqliteClientStore, count: int) -> list[AppTally]:
    """``count`` records, one per loop turn, each turn also busy for 0.4 ms (reading,
    answering): the trickle of a saturated host with fresh connections."""
    pending = []
    for n in range(count):
        pending.append(asyncio.ensure_future(store.record(sighting(n), since=T0)))
        end = time.perf_counter() + 8 * IDLE_TURN_S
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)
    return list(await asyncio.gather(*pending))


@pytest.mark.asyncio
@pytest.mark.parametrize(("commit_delay_s", "one_commit"), [(60.0, True), (0.0, False)])
async def test_a_busy_loop_fills_one_commit_within_commit_delay(
    tmp_path: Path, commit_delay_s: float, one_commit: bool
) -> None:
    store = await SqliteClientStore.open(tmp_path / DATABASE_FILE, commit_delay_s=commit_delay_s)
    try:
        statements = await trace(store)
        tallies = await asyncio.wait_for(busy_arrivals(store, 12), timeout=30)
    finally:
        await store.close()
    assert [tally.live_clients for tally in tallies] == list(range(1, 13))
    # With the delay, the writer waited through the busy turns and wrote all twelve at the
    # first idle one; without it, it wrote whatever had arrived whenever it was free.
    assert (statements.count("COMMIT") == 1) is one_commit
    assert stored_cmids(tmp_path) == {cmid(n) for n in range(12)}


@pytest.mark.asyncio
async def test_a_lone_record_on_an_idle_loop_does_not_wait_for_commit_delay(
    tmp_path: Path,
) -> None:
    store = await SqliteClientStore.open(tmp_path / DATABASE_FILE, commit_delay_s=60.0)
    try:
        tally = await asyncio.wait_for(store.record(sighting(1), since=T0), timeout=10)
    finally:
        await store.close()
    assert tally.live_clients == 1
