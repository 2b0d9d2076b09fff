"""The client table in SQLite: one file in the data dir, safe beside other processes.

Theory of operation:

* Threading. ``sqlite3`` blocks, so every statement runs on one dedicated worker thread
  (``ThreadPoolExecutor(max_workers=1)``); the connection is created, used and closed in that
  thread only, and the event loop merely awaits futures. One thread also serialises this
  process's requests, so concurrent :meth:`record` calls never contend with each other.
* Other processes. The CLI (``clients forget``, ``status``) opens the same file while the
  daemon runs. WAL lets readers and the one writer proceed together; every write
  transaction starts with ``BEGIN IMMEDIATE``, so it takes the write lock up front and waits
  up to the busy timeout for it, instead of failing halfway when a read lock cannot be
  upgraded. After every job the worker reads ``PRAGMA data_version``, which moves only when
  another connection committed: that is :meth:`changed_elsewhere`, at no extra round trip.
  The workers of ``serve --workers`` are such other processes too, each writing all the
  time: ``changes_interval_s`` lets them hear of others' writes at most that often.
* Durability. :meth:`record` commits before it returns, and the daemon answers only then:
  with ``synchronous = FULL`` an acknowledged activation survives power loss, with
  ``NORMAL`` (in WAL mode) a crash of the daemon.
* Grouped commits. A COMMIT with ``synchronous = FULL`` is an fsync, and under load it was
  most of the store's cost. So :meth:`record` calls that arrive while a batch is being
  written wait in a queue; when the worker is free, up to :data:`RECORD_BATCH` of them run,
  in arrival order, inside one ``BEGIN IMMEDIATE ... COMMIT``, each computing its own tally
  after its own write. Their futures are resolved only once that COMMIT returned, so an
  answer still means "on disk"; if the batch cannot commit, every caller in it gets the
  :class:`StorageError` and nobody is told of a row that was lost. Each job runs inside its
  own SAVEPOINT, so a job that fails on its own (a bad value, a constraint) is rolled back
  alone and the others still commit, as if each had had its own transaction.
* Counting. A tally must not cost a scan of every live client on every request, so
  triggers keep ``activations_by_hour`` (clients per app, hour of last counted activation
  and required count) in step with ``clients``; a tally sums the whole hours in the window
  and reads the index only for the partial hour at its start.
* Time. Timestamps are integer microseconds since the Unix epoch, UTC, so they sort and
  compare in SQL exactly as the datetimes do.
* Schema. ``PRAGMA user_version`` is the number of migrations applied; :data:`_MIGRATIONS`
  is the ordered list, each applied in its own transaction.
* Errors. ``sqlite3`` and file-system errors become :class:`StorageError` in one place,
  :meth:`SqliteClientStore._in_thread`.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, TypeVarTuple

from kms_host.errors import StorageError
from kms_host.storage import AppTally, ClientRecord, RequestStats, Sighting
from protocol.kms.messages import LicenseStatus

__all__ = ["SqliteClientStore"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for other processes' transactions: the CLI's (at most a delete) or
sibling workers' batches (milliseconds each), after which it fails with a StorageError."""

RECORD_BATCH = 64
"""Most :meth:`SqliteClientStore.record` calls sharing one transaction: enough to spread a
COMMIT's fsync over a busy host's concurrent requests, few enough that a batch holds the
write lock (and delays the CLI) for milliseconds only."""

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the client table needs aware UTC times")
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


# --- schema ----------------------------------------------------------------------------------


_HOUR_US = 3_600_000_000
"""Granularity of ``activations_by_hour``: one hour in microseconds. The v1 triggers spell
it out (3600000000): a released migration never changes, whatever this constant becomes."""

_V1_SCHEMA = (
    """CREATE TABLE clients (
        app TEXT NOT NULL,
        cmid TEXT NOT NULL,
        machine_name TEXT NOT NULL,
        sku_id TEXT NOT NULL,
        kms_id TEXT NOT NULL,
        license_status INTEGER NOT NULL,
        is_vm INTEGER NOT NULL,
        required_client_count INTEGER NOT NULL,
        protocol_version TEXT NOT NULL,
        last_peer TEXT NOT NULL,
        last_hresult INTEGER NOT NULL,
        first_seen_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL,
        last_activated_us INTEGER,
        activated_required_count INTEGER,
        request_count INTEGER NOT NULL,
        PRIMARY KEY (app, cmid)
    )""",
    "CREATE INDEX clients_counting ON clients (app, last_activated_us, activated_required_count)",
    "CREATE INDEX clients_by_last_seen ON clients (last_seen_us)",
    "CREATE INDEX clients_by_cmid ON clients (cmid)",
    """CREATE TABLE activations_by_hour (
        app TEXT NOT NULL,
        hour INTEGER NOT NULL,
        required_count INTEGER NOT NULL,
        clients INTEGER NOT NULL,
        PRIMARY KEY (app, hour, required_count)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER clients_activation_added AFTER INSERT ON clients
    WHEN new.last_activated_us IS NOT NULL BEGIN
        INSERT INTO activations_by_hour VALUES
            (new.app, new.last_activated_us / 3600000000, new.activated_required_count, 1)
        ON CONFLICT DO UPDATE SET clients = clients + 1;
    END""",
    """CREATE TRIGGER clients_activation_removed AFTER DELETE ON clients
    WHEN old.last_activated_us IS NOT NULL BEGIN
        UPDATE activations_by_hour SET clients = clients - 1
        WHERE app = old.app AND hour = old.last_activated_us / 3600000000
            AND required_count = old.activated_required_count;
    END""",
    """CREATE TRIGGER clients_activation_moved
    AFTER UPDATE OF app, last_activated_us, activated_required_count ON clients
    WHEN old.app IS NOT new.app OR old.last_activated_us IS NOT new.last_activated_us
        OR old.activated_required_count IS NOT new.activated_required_count BEGIN
        UPDATE activations_by_hour SET clients = clients - 1
        WHERE app = old.app AND hour = old.last_activated_us / 3600000000
            AND required_count = old.activated_required_count;
        INSERT INTO activations_by_hour
            SELECT new.app, new.last_activated_us / 3600000000, new.activated_required_count, 1
            WHERE new.last_activated_us IS NOT NULL
        ON CONFLICT DO UPDATE SET clients = clients + 1;
    END""",
    """CREATE TABLE request_stats (
        license_status INTEGER PRIMARY KEY,
        requests INTEGER NOT NULL,
        failed INTEGER NOT NULL
    )""",
)


def _v1_initial(conn: sqlite3.Connection) -> None:
    """Clients per (app, CMID), their activations per hour, and the cumulative counters.

    ``activated_required_count`` is the RequiredClientCount of the last *counted* activation:
    the count's cap must not move because a refused request asked for an absurd N-policy.

    ``activations_by_hour`` keeps, per app, hour of last activation and required count, how
    many clients are there. Triggers maintain it from ``clients`` in the same transaction,
    whoever writes (the daemon or the CLI), so a tally sums a few hundred hour rows and scans
    the index for one partial hour only, however many clients the table holds.
    """
    for statement in _V1_SCHEMA:
        conn.execute(statement)


def _v2_synthetic(conn: sqlite3.Connection) -> None:
    """Mark the rows ``kms-host clients seed`` makes, so listings tell them from machines."""
    conn.execute("ALTER TABLE clients ADD COLUMN synthetic INTEGER NOT NULL DEFAULT 0")


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1_initial, _v2_synthetic)
"""Applied in order; ``PRAGMA user_version`` counts those applied. Only ever append."""


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """Writes take the write lock up front (IMMEDIATE); DEFERRED gives reads one snapshot."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; _transaction() says where they are.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[synchronous]}")
    except BaseException:
        conn.close()
        raise
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _migrate(conn: sqlite3.Connection) -> None:
    current = _user_version(conn)
    if current > len(_MIGRATIONS):
        raise StorageError(
            f"schema version {current} is newer than this kms-host knows"
            f" ({len(_MIGRATIONS)}); use a newer kms-host"
        )
    for version in range(current + 1, len(_MIGRATIONS) + 1):
        with _transaction(conn):
            # Re-read under the write lock: another process may have just migrated.
            if _user_version(conn) < version:
                _MIGRATIONS[version - 1](conn)
                conn.execute(f"PRAGMA user_version = {version}")


# --- queries (run in the worker thread) ----------------------------------------------------

_UPSERT_CLIENT = """
INSERT INTO clients (app, cmid, machine_name, sku_id, kms_id, license_status, is_vm,
    required_client_count, protocol_version, last_peer, last_hresult, first_seen_us,
    last_seen_us, last_activated_us, activated_required_count, request_count)
VALUES (:app, :cmid, :machine_name, :sku_id, :kms_id, :license_status, :is_vm,
    :required_client_count, :protocol_version, :peer, :hresult, :seen_us,
    :seen_us, :activated_us, :activated_required_count, 1)
ON CONFLICT (app, cmid) DO UPDATE SET
    machine_name = excluded.machine_name,
    sku_id = excluded.sku_id,
    kms_id = excluded.kms_id,
    license_status = excluded.license_status,
    is_vm = excluded.is_vm,
    required_client_count = excluded.required_client_count,
    protocol_version = excluded.protocol_version,
    last_peer = excluded.last_peer,
    last_hresult = excluded.last_hresult,
    last_seen_us = excluded.last_seen_us,
    last_activated_us = coalesce(excluded.last_activated_us, last_activated_us),
    activated_required_count = coalesce(excluded.activated_required_count,
                                        activated_required_count),
    request_count = request_count + 1
"""

_BUMP_STATS = """
INSERT INTO request_stats (license_status, requests, failed) VALUES (:license_status, 1, :failed)
ON CONFLICT (license_status) DO UPDATE SET
    requests = requests + 1, failed = failed + excluded.failed
"""

_TALLY = """
SELECT coalesce(sum(clients), 0), coalesce(max(required_count), 0) FROM (
    SELECT clients, required_count FROM activations_by_hour
    WHERE app = :app AND hour > :hour AND clients > 0
    UNION ALL
    SELECT 1, activated_required_count FROM clients
    WHERE app = :app AND last_activated_us >= :since_us AND last_activated_us < :next_hour_us
)
"""

_APPS_SINCE = "SELECT DISTINCT app FROM activations_by_hour WHERE hour >= ? AND clients > 0"

_CLIENTS = """
SELECT app, cmid, machine_name, sku_id, kms_id, license_status, is_vm, required_client_count,
    protocol_version, last_peer, last_hresult, first_seen_us, last_seen_us, last_activated_us,
    request_count, synthetic
FROM clients
WHERE (:app IS NULL OR app = :app) AND (:since_us IS NULL OR last_seen_us >= :since_us)
ORDER BY last_seen_us DESC, app, cmid
LIMIT :limit
"""


def _tally(conn: sqlite3.Connection, app: str, since: datetime) -> AppTally:
    since_us = _micros(since)
    hour = since_us // _HOUR_US  # whole hours after this one come from activations_by_hour
    params = {"app": app, "hour": hour, "since_us": since_us, "next_hour_us": (hour + 1) * _HOUR_US}
    live, cap = conn.execute(_TALLY, params).fetchone()
    return AppTally(live_clients=live, max_required_count=cap)


def _write_sighting(conn: sqlite3.Connection, sighting: Sighting, since: datetime) -> AppTally:
    """Store one sighting inside the caller's transaction; its tally then includes it."""
    seen_us = _micros(sighting.seen_at)
    params: dict[str, Any] = {
        "app": sighting.app,
        "cmid": str(sighting.cmid),
        "machine_name": sighting.machine_name,
        "sku_id": str(sighting.sku_id),
        "kms_id": str(sighting.kms_id),
        "license_status": sighting.license_status,
        "is_vm": sighting.is_vm,
        "required_client_count": sighting.required_client_count,
        "protocol_version": sighting.protocol_version,
        "peer": sighting.peer,
        "hresult": sighting.hresult,
        "seen_us": seen_us,
        "activated_us": seen_us if sighting.counted else None,
        "activated_required_count": (sighting.required_client_count if sighting.counted else None),
        "failed": int(sighting.hresult != 0),
    }
    conn.execute(_UPSERT_CLIENT, params)
    conn.execute(_BUMP_STATS, params)
    return _tally(conn, sighting.app, since)


class _RecordJob(NamedTuple):
    """One queued :meth:`SqliteClientStore.record` call and the future its caller awaits."""

    sighting: Sighting
    since: datetime
    waiter: asyncio.Future[AppTally]


def _record_batch(
    conn: sqlite3.Connection, jobs: list[tuple[Sighting, datetime]]
) -> list[AppTally | Exception]:
    """Write ``jobs`` in order in one transaction; one outcome per job, valid once committed.

    A job's own failure is rolled back to its SAVEPOINT and becomes its outcome, so the
    others are unaffected, exactly as with a transaction each. If SQLite has rolled back the
    whole transaction on its own (an I/O error, a full disk), the earlier jobs are gone too:
    the error is raised and fails the batch. So does a failing COMMIT, after a ROLLBACK.
    """
    outcomes: list[AppTally | Exception] = []
    with _transaction(conn):
        for sighting, since in jobs:
            conn.execute("SAVEPOINT record")
            try:
                outcomes.append(_write_sighting(conn, sighting, since))
            except Exception as exc:
                if not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK TO record")
                outcomes.append(exc)
            conn.execute("RELEASE record")
    return outcomes


def _tallies(conn: sqlite3.Connection, since: datetime) -> dict[str, AppTally]:
    with _transaction(conn, "DEFERRED"):
        apps = [app for (app,) in conn.execute(_APPS_SINCE, (_micros(since) // _HOUR_US,))]
        tallies = {app: _tally(conn, app, since) for app in apps}
    return {app: tally for app, tally in tallies.items() if tally.live_clients}


def _clients(
    conn: sqlite3.Connection, app: str | None, since: datetime | None, limit: int | None
) -> list[ClientRecord]:
    params = {
        "app": app,
        "since_us": None if since is None else _micros(since),
        "limit": -1 if limit is None else limit,  # SQLite: a negative LIMIT means none
    }
    return [
        ClientRecord(
            app=row[0],
            cmid=uuid.UUID(row[1]),
            machine_name=row[2],
            sku_id=uuid.UUID(row[3]),
            kms_id=uuid.UUID(row[4]),
            license_status=row[5],
            is_vm=bool(row[6]),
            required_client_count=row[7],
            protocol_version=row[8],
            last_peer=row[9],
            last_hresult=row[10],
            first_seen=_moment(row[11]),
            last_seen=_moment(row[12]),
            last_activated=None if row[13] is None else _moment(row[13]),
            request_count=row[14],
            synthetic=bool(row[15]),
        )
        for row in conn.execute(_CLIENTS, params)
    ]


def _forget(conn: sqlite3.Connection, cmid: uuid.UUID) -> int:
    with _transaction(conn):
        return conn.execute("DELETE FROM clients WHERE cmid = ?", (str(cmid),)).rowcount


def _reset(conn: sqlite3.Connection, app: str | None) -> int:
    with _transaction(conn):
        return conn.execute("DELETE FROM clients WHERE ? IS NULL OR app = ?", (app, app)).rowcount


_INSERT_SYNTHETIC = """
INSERT INTO clients (app, cmid, machine_name, sku_id, kms_id, license_status, is_vm,
    required_client_count, protocol_version, last_peer, last_hresult, first_seen_us,
    last_seen_us, last_activated_us, activated_required_count, request_count, synthetic)
VALUES (:app, :cmid, :machine_name, :sku_id, :kms_id, :license_status, :is_vm,
    :required_client_count, :protocol_version, :peer, 0, :seen_us,
    :seen_us, :seen_us, :required_client_count, 0, 1)
"""


def _seed(conn: sqlite3.Connection, template: Sighting, count: int) -> list[uuid.UUID]:
    common = {
        "app": template.app,
        "sku_id": str(template.sku_id),
        "kms_id": str(template.kms_id),
        "license_status": template.license_status,
        "is_vm": template.is_vm,
        "required_client_count": template.required_client_count,
        "protocol_version": template.protocol_version,
        "peer": template.peer,
        "seen_us": _micros(template.seen_at),
    }
    cmids = [uuid.uuid4() for _ in range(count)]
    with _transaction(conn):
        (existing,) = conn.execute(
            "SELECT count(*) FROM clients WHERE app = ? AND synthetic", (template.app,)
        ).fetchone()
        conn.executemany(
            _INSERT_SYNTHETIC,
            (
                {**common, "cmid": str(cmid), "machine_name": f"seed-{existing + n:04}"}
                for n, cmid in enumerate(cmids, start=1)
            ),
        )
    return cmids


def _sizes(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT app, count(*) FROM clients GROUP BY app").fetchall())


_UNREADABLE = -1
"""The ``request_stats`` row of requests that failed before their license status was read."""


def _count_unreadable(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        conn.execute(_BUMP_STATS, {"license_status": _UNREADABLE, "failed": 1})


def _stats(conn: sqlite3.Connection) -> RequestStats:
    rows = conn.execute("SELECT license_status, requests, failed FROM request_stats").fetchall()
    by_status = dict.fromkeys(map(int, LicenseStatus), 0)
    by_status.update((status, requests) for status, requests, _ in rows if status != _UNREADABLE)
    return RequestStats(
        total=sum(requests for _, requests, _ in rows),
        failed=sum(failed for _, _, failed in rows),
        by_license_status=by_status,
    )


# --- the store -------------------------------------------------------------------------------


class SqliteClientStore:
    """:class:`~kms_host.storage.ClientStore` on a SQLite file; create with :meth:`open`."""

    def __init__(self, path: Path, synchronous: str, changes_interval_s: float = 0.0) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        self._path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kms-host-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched in the worker thread only
        self._closed = False
        self._data_version: int | None = None  # worker thread only
        self._changed_elsewhere = False
        self._changes_interval_s = changes_interval_s
        self._next_change_notice = 0.0  # time.monotonic() before which no change is reported
        self._queued: collections.deque[_RecordJob] = collections.deque()  # event loop only
        self._writer: asyncio.Task[None] | None = None  # runs the batches while any are queued

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: str = "full", changes_interval_s: float = 0.0
    ) -> SqliteClientStore:
        """Open or create the database at ``path`` and bring its schema up to date.

        ``changes_interval_s`` spaces out :meth:`changed_elsewhere`'s reports (0: each one).
        """
        store = cls(path, synchronous, changes_interval_s)
        try:
            await store._submit(_migrate)
        except BaseException:
            await store.close()
            raise
        return store

    async def _submit(self, job: Callable[[sqlite3.Connection, *_Ts], _T], *args: *_Ts) -> _T:
        if self._closed:
            raise StorageError(f"{self._path}: the client store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, job, *args)

    def _in_thread(self, job: Callable[[sqlite3.Connection, *_Ts], _T], *args: *_Ts) -> _T:
        """Run ``job`` on the worker thread's connection (opened by the first job)."""
        try:
            if self._conn is None:
                self._conn = _connect(self._path, self._synchronous)
            result = job(self._conn, *args)
            self._note_data_version(self._conn)
            return result
        except (sqlite3.Error, OSError) as exc:
            raise self._storage_error(exc) from exc

    def _storage_error(self, exc: sqlite3.Error | OSError) -> StorageError:
        return StorageError(f"{self._path}: {exc}")

    def _note_data_version(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA data_version`` moves only when *another* connection commits (SQLite docs)."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if self._data_version is not None and version != self._data_version:
            self._changed_elsewhere = True  # read on the event loop after this job's future
        self._data_version = version

    def _close_in_thread(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def record(self, sighting: Sighting, *, since: datetime) -> AppTally:
        """Queue ``sighting`` for the next batch and wait until that batch has committed."""
        if self._closed:
            raise StorageError(f"{self._path}: the client store is closed")
        waiter: asyncio.Future[AppTally] = asyncio.get_running_loop().create_future()
        self._queued.append(_RecordJob(sighting, since, waiter))
        if self._writer is None:
            # Started on the next loop iteration: records arriving until then join the batch.
            self._writer = asyncio.create_task(self._write_batches(), name="kms-host-sqlite")
        return await waiter

    async def _write_batches(self) -> None:
        """Run queued records in batches, one batch at a time, until the queue is empty.

        One batch at a time is what makes batches: whatever arrives while the worker writes
        one batch waits and goes into the next. Other store calls are not queued here; they
        take their turn on the worker thread between batches.
        """
        batch: list[_RecordJob] = []
        try:
            while self._queued:
                batch = self._next_batch()
                if not batch:
                    continue
                jobs = [(job.sighting, job.since) for job in batch]
                try:
                    # Not _submit: records queued before close() are still written.
                    outcomes = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._in_thread, _record_batch, jobs
                    )
                except StorageError as exc:  # the transaction is lost: nobody in it committed
                    outcomes = [exc] * len(batch)
                for job, outcome in zip(batch, outcomes, strict=True):
                    self._settle(job.waiter, outcome)
        finally:
            # Reached with waiters pending only if this task is cancelled (loop shutdown) or
            # hits a bug: whether their batch committed is then unknown, so it is an error.
            unknown = f"{self._path}: interrupted before its commit was known"
            for job in (*batch, *self._queued):
                self._settle(job.waiter, StorageError(unknown))
            self._queued.clear()
            self._writer = None

    def _next_batch(self) -> list[_RecordJob]:
        """Up to :data:`RECORD_BATCH` queued records, oldest first, skipping cancelled ones."""
        batch: list[_RecordJob] = []
        while self._queued and len(batch) < RECORD_BATCH:
            job = self._queued.popleft()
            if not job.waiter.done():  # a cancelled caller's record is not written
                batch.append(job)
        return batch

    def _settle(self, waiter: asyncio.Future[AppTally], outcome: AppTally | Exception) -> None:
        if waiter.done():  # its caller was cancelled meanwhile
            return
        if isinstance(outcome, AppTally):
            waiter.set_result(outcome)
        elif isinstance(outcome, (sqlite3.Error, OSError)):
            error = self._storage_error(outcome)
            error.__cause__ = outcome  # as ``raise ... from`` in _in_thread
            waiter.set_exception(error)
        else:
            waiter.set_exception(outcome)

    async def tally(self, app: str, *, since: datetime) -> AppTally:
        return await self._submit(_tally, app, since)

    async def tallies(self, *, since: datetime) -> dict[str, AppTally]:
        return await self._submit(_tallies, since)

    async def clients(
        self, *, app: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[ClientRecord]:
        return await self._submit(_clients, app, since, limit)

    async def forget(self, cmid: uuid.UUID) -> int:
        return await self._submit(_forget, cmid)

    async def reset(self, app: str | None = None) -> int:
        return await self._submit(_reset, app)

    async def stats(self) -> RequestStats:
        return await self._submit(_stats)

    async def count_unreadable(self) -> None:
        await self._submit(_count_unreadable)

    async def seed(self, template: Sighting, count: int) -> list[uuid.UUID]:
        return await self._submit(_seed, template, count)

    async def sizes(self) -> dict[str, int]:
        return await self._submit(_sizes)

    def changed_elsewhere(self) -> bool:
        if not self._changed_elsewhere:
            return False
        now = time.monotonic()
        if now < self._next_change_notice:
            return False  # still noted: reported by the first call after the interval
        self._changed_elsewhere = False
        self._next_change_notice = now + self._changes_interval_s
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            # Records already queued are written and answered before the connection closes.
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)
        try:
            await loop.run_in_executor(self._executor, self._close_in_thread)
        finally:
            # The close job has run, so the worker is idle and exits at once.
            self._executor.shutdown(wait=True)
