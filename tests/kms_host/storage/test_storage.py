"""The SQLite client table on a real file: counting, counters, listing, deletion, sharing."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sightings import WIN10_KMS, WIN10_SKU, cmid, windows_sighting

from kms_host.errors import StorageError
from kms_host.policy.activation import AppTally
from kms_host.storage import DATABASE_FILE, ClientStore, Sighting, open_store
from protocol.kms import LicenseStatus

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
REFUSED = 0xC004F042


def sighting(n: int = 1, **changes: Any) -> Sighting:
    return windows_sighting(n, **{"seen_at": T0, **changes})


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[ClientStore]:
    opened = await open_store(tmp_path / "data")
    yield opened
    await opened.close()


# --- counting ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_distinct_cmids_are_counted(store: ClientStore) -> None:
    counts = [(await store.record(sighting(n), since=T0)).live_clients for n in range(1, 6)]
    assert counts == [1, 2, 3, 4, 5]
    assert await store.tally("windows", since=T0) == AppTally(5, 25)


@pytest.mark.asyncio
async def test_repeated_cmid_does_not_raise_the_count(store: ClientStore) -> None:
    await store.record(sighting(1), since=T0)
    tally = await store.record(sighting(1, seen_at=T0 + DAY, peer="192.0.2.9:1"), since=T0)
    assert tally.live_clients == 1
    [row] = await store.clients()
    assert row.request_count == 2
    assert (row.first_seen, row.last_seen, row.last_activated) == (T0, T0 + DAY, T0 + DAY)
    assert row.last_peer == "192.0.2.9:1"


@pytest.mark.asyncio
async def test_refused_sightings_are_recorded_but_not_counted(store: ClientStore) -> None:
    refused = sighting(1, hresult=REFUSED, counted=False, required_client_count=5000)
    assert await store.record(refused, since=T0) == AppTally(0, 0)
    [row] = await store.clients()
    assert (row.last_hresult, row.last_activated, row.request_count) == (REFUSED, None, 1)

    await store.record(sighting(2), since=T0)
    # A counted client later refused keeps counting, and its refused N-policy moves no cap.
    later = dataclasses.replace(refused, cmid=cmid(2), seen_at=T0 + DAY)
    assert await store.record(later, since=T0) == AppTally(1, 25)
    assert (await store.stats()).failed == 2


@pytest.mark.asyncio
async def test_window_expiry_through_since(store: ClientStore) -> None:
    await store.record(sighting(1, seen_at=T0), since=T0)
    await store.record(sighting(2, seen_at=T0 + 10 * DAY), since=T0)
    assert (await store.tally("windows", since=T0)).live_clients == 2  # since is inclusive
    assert (await store.tally("windows", since=T0 + timedelta(microseconds=1))).live_clients == 1
    assert (await store.tally("windows", since=T0 + 11 * DAY)).live_clients == 0
    # Renewing an expired client brings it back.
    tally = await store.record(sighting(1, seen_at=T0 + 40 * DAY), since=T0 + 10 * DAY)
    assert tally.live_clients == 2


@pytest.mark.asyncio
async def test_max_required_count_and_apps_apart(store: ClientStore) -> None:
    await store.record(sighting(1, required_client_count=5), since=T0)
    assert (await store.record(sighting(2, required_client_count=25), since=T0)) == AppTally(2, 25)
    office = sighting(3, app="office", required_client_count=5)
    assert await store.record(office, since=T0) == AppTally(1, 5)
    await store.record(sighting(4, app="office2010", counted=False, hresult=REFUSED), since=T0)
    assert await store.tallies(since=T0) == {"windows": AppTally(2, 25), "office": AppTally(1, 5)}
    assert await store.tally("office2010", since=T0) == AppTally(0, 0)
    assert await store.tallies(since=T0 + DAY) == {}


@pytest.mark.asyncio
async def test_since_inside_an_hour(store: ClientStore) -> None:
    hour = datetime(2024, 5, 1, 12, tzinfo=UTC)
    minute = timedelta(minutes=1)
    for n, at in enumerate([hour - minute, hour, hour + 10 * minute, hour + 70 * minute]):
        await store.record(sighting(n, seen_at=at, required_client_count=5 + n), since=T0)
    assert await store.tally("windows", since=hour + 5 * minute) == AppTally(2, 8)
    assert await store.tally("windows", since=hour + 10 * minute) == AppTally(2, 8)
    assert await store.tally("windows", since=hour + 11 * minute) == AppTally(1, 8)
    assert await store.tally("windows", since=hour - 2 * minute) == AppTally(4, 8)


@pytest.mark.asyncio
async def test_tallies_match_a_model_through_every_change(store: ClientStore) -> None:
    """Renewals, refusals, forget and reset keep the hourly aggregate equal to a recount."""
    rng = random.Random(1688)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    model: dict[tuple[str, int], tuple[datetime, int]] = {}  # last counted activation, N
    for step in range(400):
        n, app = rng.randrange(60), rng.choice(["windows", "office"])
        at = start + timedelta(minutes=rng.randrange(72 * 60))
        counted = rng.random() < 0.8
        required = rng.choice([5, 25, 100])
        await store.record(
            sighting(
                n,
                app=app,
                seen_at=at,
                counted=counted,
                required_client_count=required,
                hresult=0 if counted else REFUSED,
            ),
            since=start,
        )
        if counted:
            model[app, n] = (at, required)
        if step % 97 == 96:
            forgotten = rng.randrange(60)
            await store.forget(cmid(forgotten))
            model = {key: value for key, value in model.items() if key[1] != forgotten}
        if step == 250:
            await store.reset("office")
            model = {key: value for key, value in model.items() if key[0] != "office"}
        if step % 40 == 0:
            since = start + timedelta(minutes=rng.randrange(72 * 60))
            expected: dict[str, AppTally] = {}
            for (row_app, _), (activated, required) in model.items():
                if activated >= since:
                    seen = expected.get(row_app, AppTally(0, 0))
                    expected[row_app] = AppTally(
                        seen.live_clients + 1, max(seen.max_required_count, required)
                    )
            assert await store.tallies(since=since) == expected


# --- cumulative counters ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stats_counters(store: ClientStore) -> None:
    empty = await store.stats()
    assert (empty.total, empty.failed) == (0, 0)
    assert dict(empty.by_license_status) == {int(status): 0 for status in LicenseStatus}

    await store.record(sighting(1, license_status=LicenseStatus.UNLICENSED), since=T0)
    await store.record(sighting(1, license_status=LicenseStatus.LICENSED), since=T0)
    await store.record(sighting(2, license_status=LicenseStatus.LICENSED), since=T0)
    refused = sighting(3, license_status=LicenseStatus.NOTIFICATION, hresult=REFUSED)
    await store.record(dataclasses.replace(refused, counted=False), since=T0)
    await store.record(sighting(4, license_status=9, hresult=0x8007000D, counted=False), since=T0)

    stats = await store.stats()
    assert (stats.total, stats.failed) == (5, 2)
    assert stats.by_license_status[LicenseStatus.UNLICENSED] == 1
    assert stats.by_license_status[LicenseStatus.LICENSED] == 2
    assert stats.by_license_status[LicenseStatus.NOTIFICATION] == 1
    assert stats.by_license_status[LicenseStatus.EXTENDED_GRACE] == 0
    assert stats.by_license_status[9] == 1


# --- listing ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_clients_fields_round_trip(store: ClientStore) -> None:
    sent = sighting(
        7, is_vm=True, protocol_version="4.0", license_status=LicenseStatus.OUT_OF_TOLERANCE_GRACE
    )
    await store.record(sent, since=T0)
    [row] = await store.clients()
    assert (row.app, row.cmid, row.machine_name) == ("windows", sent.cmid, sent.machine_name)
    assert (row.sku_id, row.kms_id) == (WIN10_SKU, WIN10_KMS)
    assert (row.license_status, row.is_vm, row.required_client_count) == (3, True, 25)
    assert (row.protocol_version, row.last_peer, row.last_hresult) == ("4.0", sent.peer, 0)
    assert row.first_seen == row.last_seen == row.last_activated == T0
    assert row.first_seen.tzinfo is not None
    assert row.first_seen.utcoffset() == timedelta(0)


@pytest.mark.asyncio
async def test_clients_order_filters_and_limit(store: ClientStore) -> None:
    await store.record(sighting(1, seen_at=T0), since=T0)
    await store.record(sighting(2, seen_at=T0 + 2 * DAY), since=T0)
    await store.record(sighting(3, app="office", seen_at=T0 + DAY), since=T0)
    await store.record(sighting(4, seen_at=T0 + 3 * DAY, counted=False, hresult=1), since=T0)

    assert [row.cmid for row in await store.clients()] == [cmid(4), cmid(2), cmid(3), cmid(1)]
    assert [row.cmid for row in await store.clients(app="windows")] == [cmid(4), cmid(2), cmid(1)]
    assert [row.cmid for row in await store.clients(since=T0 + DAY)] == [cmid(4), cmid(2), cmid(3)]
    assert [row.cmid for row in await store.clients(limit=2)] == [cmid(4), cmid(2)]
    only = await store.clients(app="office", since=T0 + DAY, limit=5)
    assert [row.cmid for row in only] == [cmid(3)]
    assert await store.clients(app="office2010") == []


# --- deletion ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_forget_removes_a_cmid_from_every_app(store: ClientStore) -> None:
    await store.record(sighting(1), since=T0)
    await store.record(sighting(1, app="office"), since=T0)
    await store.record(sighting(2), since=T0)
    assert await store.forget(cmid(1)) == 2
    assert await store.forget(cmid(1)) == 0
    assert [row.cmid for row in await store.clients()] == [cmid(2)]
    assert (await store.stats()).total == 3  # cumulative counters are kept


@pytest.mark.asyncio
async def test_forget_machine_removes_that_name_and_uncounts_it(store: ClientStore) -> None:
    for n in range(1, 4):
        await store.record(sighting(n, machine_name="bench.lab.example"), since=T0)
    await store.record(sighting(4), since=T0)
    await store.record(sighting(5, machine_name="BENCH.lab.example"), since=T0)  # not the name
    assert await store.forget_machine("bench.lab.example") == 3
    assert await store.forget_machine("bench.lab.example") == 0
    assert {row.cmid for row in await store.clients()} == {cmid(4), cmid(5)}
    assert await store.tally("windows", since=T0 - DAY) == AppTally(2, 25)  # the hourly rows too


@pytest.mark.asyncio
async def test_reset_one_app_then_all(store: ClientStore) -> None:
    for n in range(1, 4):
        await store.record(sighting(n), since=T0)
    await store.record(sighting(9, app="office"), since=T0)
    assert await store.reset("windows") == 3
    assert await store.tallies(since=T0) == {"office": AppTally(1, 25)}
    assert await store.reset() == 1
    assert await store.clients() == []
    assert (await store.stats()).total == 4


# --- the file ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    first = await open_store(tmp_path, synchronous="normal")
    await first.record(sighting(1), since=T0)
    await first.record(sighting(2, counted=False, hresult=REFUSED), since=T0)
    rows, stats = await first.clients(), await first.stats()
    await first.close()

    again = await open_store(tmp_path)
    try:
        assert await again.clients() == rows
        assert await again.stats() == stats
        assert await again.tally("windows", since=T0) == AppTally(1, 25)
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_creates_the_data_dir_and_a_wal_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    store = await open_store(data_dir)
    await store.close()
    with sqlite3.connect(data_dir / DATABASE_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()


@pytest.mark.asyncio
async def test_migrates_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / DATABASE_FILE).write_bytes(b"")
    store = await open_store(tmp_path)
    try:
        assert (await store.record(sighting(1), since=T0)).live_clients == 1
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE_FILE) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        await open_store(tmp_path)


@pytest.mark.asyncio
async def test_file_errors_become_storage_errors(tmp_path: Path) -> None:
    (tmp_path / DATABASE_FILE).write_bytes(b"this is not a database, it is a text file" * 100)
    with pytest.raises(StorageError, match="not a database") as info:
        await open_store(tmp_path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError):
        await open_store(blocker)  # the data dir is a file


@pytest.mark.asyncio
async def test_closed_store(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()
    await store.close()
    with pytest.raises(StorageError, match="closed"):
        await store.stats()


@pytest.mark.asyncio
async def test_naive_times_are_a_bug(store: ClientStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.record(sighting(1, seen_at=datetime(2024, 5, 1)), since=T0)


@pytest.mark.asyncio
async def test_unknown_synchronous_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        await open_store(tmp_path, synchronous="off")


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_records_give_a_consistent_tally(store: ClientStore) -> None:
    distinct = [sighting(n) for n in range(50)]
    repeats = [sighting(n, seen_at=T0 + DAY) for n in range(0, 50, 5)]
    tallies = await asyncio.gather(*(store.record(s, since=T0) for s in distinct + repeats))
    # Each tally is taken right after its own write, in order, so the counts are exactly 1..50.
    assert sorted({tally.live_clients for tally in tallies}) == list(range(1, 51))
    assert await store.tally("windows", since=T0) == AppTally(50, 25)
    assert (await store.stats()).total == 60
    assert sum(row.request_count for row in await store.clients()) == 60


@pytest.mark.asyncio
async def test_a_second_store_sees_the_first_ones_commits(tmp_path: Path) -> None:
    daemon, cli = await open_store(tmp_path), await open_store(tmp_path)
    try:
        await daemon.record(sighting(1), since=T0)
        await daemon.record(sighting(2), since=T0)
        assert (await cli.tally("windows", since=T0)).live_clients == 2
        assert await cli.forget(cmid(1)) == 1
        assert (await daemon.record(sighting(3), since=T0)).live_clients == 2
        assert (await cli.stats()).total == 3
    finally:
        await daemon.close()
        await cli.close()


CHILD = """
import asyncio, sys, uuid
from datetime import UTC, datetime
from pathlib import Path
from kms_host.storage import Sighting, open_store

async def main() -> None:
    store = await open_store(Path(sys.argv[1]))
    now = datetime.now(UTC)
    for n in range(200):
        await store.record(
            Sighting("windows", uuid.UUID(int=n), "child", uuid.UUID(int=1), uuid.UUID(int=2),
                     1, False, 25, "6.0", "192.0.2.1:1", 0, now, True),
            since=now,
        )
        if n % 50 == 0:
            await store.reset("office")
    await store.close()

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_another_process_writes_at_the_same_time(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(tmp_path), stderr=asyncio.subprocess.PIPE
        )
        finished = asyncio.ensure_future(child.communicate())
        ours = 0
        while not finished.done() or ours < 100:  # keep writing for as long as the child does
            app = "office" if ours % 2 else "windows"
            await store.record(sighting(ours, app=app), since=T0)
            ours += 1
        _, stderr = await finished
        assert child.returncode == 0, stderr.decode()
        assert (await store.stats()).total == ours + 200
        windows = await store.tally("windows", since=T0)
        assert windows.live_clients == (ours + 1) // 2 + 200
    finally:
        await store.close()
