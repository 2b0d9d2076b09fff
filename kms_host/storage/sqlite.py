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
  written wait in a queue; when the worker is free, and after the queue has had up to
  ``commit_delay_s`` to fill while the event loop had other work (never while it idles:
  :func:`~kms_host.batching.wait_while_busy`), up to :data:`RECORD_BATCH` of them run,
  in arrival order, inside one ``BEGIN IMMEDIATE ... COMMIT``, each computing its own tally
  after its own write. Their futures are resolved only once that COMMIT returned, so an
  answer still means "on disk"; if the batch cannot commit, every caller in it gets the
  :class:`StorageError` and nobody is told of a row that was lost. A job that fails on its
  own (a bad value, a constraint) is rolled back alone and the others still commit, as if
  each had had its own transaction: the batch is then written again with a SAVEPOINT per
  job (:func:`~kms_host.storage.sqlite_queries.record_batch`).
* Counting. A tally must not cost a scan of every live client on every request, so
  triggers keep ``activations_by_hour`` (clients per app, hour of last counted activation
  and required count) in step with ``clients``; a tally sums the whole hours in the window
  and reads the index only for the partial hour at its start.
* Time. Timestamps are integer microseconds since the Unix epoch, UTC, so they sort and
  compare in SQL exactly as the datetimes do.
* Schema. ``PRAGMA user_version`` is the number of migrations applied;
  ``sqlite_schema.MIGRATIONS`` is the ordered list, each applied in its own transaction.
* Errors. ``sqlite3`` and file-system errors become :class:`StorageError` in one place,
  :meth:`SqliteClientStore._in_thread`, which names the OS error behind them and chooses the
  HRESULT a client is answered (:mod:`~kms_host.storage.sqlite_errors`).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TypeVar, TypeVarTuple

from kms_host.batching import wait_while_busy
from kms_host.errors import StorageError
from kms_host.policy.activation import AppTally
from kms_host.storage import ClientRecord, RequestStats, Sighting
from kms_host.storage import sqlite_queries as queries
from kms_host.storage import sqlite_schema as schema
from kms_host.storage.sqlite_errors import storage_error

__all__ = ["SqliteClientStore"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

RECORD_BATCH = 64
"""Most :meth:`SqliteClientStore.record` calls sharing one transaction: enough to spread a
COMMIT's fsync over a busy host's concurrent requests, few enough that a batch holds the
write lock (and delays the CLI) for milliseconds only."""


class _RecordJob(NamedTuple):
    """One queued :meth:`SqliteClientStore.record` call and the future its caller awaits."""

    sighting: Sighting
    since: datetime
    waiter: asyncio.Future[AppTally]


class SqliteClientStore:
    """:class:`~kms_host.storage.ClientStore` on a SQLite file; create with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        synchronous: str,
        changes_interval_s: float = 0.0,
        commit_delay_s: float = 0.0,
    ) -> None:
        if synchronous not in schema.SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(schema.SYNCHRONOUS)}")
        self._path = path
        self._commit_delay_s = commit_delay_s
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
        cls,
        path: Path,
        *,
        synchronous: str = "full",
        changes_interval_s: float = 0.0,
        commit_delay_s: float = 0.0,
    ) -> SqliteClientStore:
        """Open or create the database at ``path`` and bring its schema up to date.

        ``changes_interval_s`` spaces out :meth:`changed_elsewhere`'s reports (0: each one).
        ``commit_delay_s`` is how long a batch may keep filling while the loop is busy (0:
        it is written as soon as the worker is free).
        """
        store = cls(path, synchronous, changes_interval_s, commit_delay_s)
        try:
            await store._submit(schema.migrate)
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
                self._conn = schema.connect(self._path, self._synchronous)
            result = job(self._conn, *args)
            self._note_data_version(self._conn)
            return result
        except StorageError as exc:  # a job's own verdict (the schema): name the file too
            raise StorageError(f"{self._path}: {exc}", hresult=exc.hresult) from exc
        except (sqlite3.Error, OSError) as exc:
            raise self._storage_error(exc) from exc

    def _storage_error(self, exc: sqlite3.Error | OSError) -> StorageError:
        return storage_error(self._path, exc)

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
                await wait_while_busy(self._commit_delay_s, self._batch_full)
                batch = self._next_batch()
                if not batch:
                    continue
                jobs = [(job.sighting, job.since) for job in batch]
                try:
                    # Not _submit: records queued before close() are still written.
                    outcomes = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._in_thread, queries.record_batch, jobs
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
                if not job.waiter.done():  # the last batch's are settled: no error to make
                    self._settle(job.waiter, StorageError(unknown))
            self._queued.clear()
            self._writer = None

    def _batch_full(self) -> bool:
        return len(self._queued) >= RECORD_BATCH

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
        return await self._submit(queries.tally, app, since)

    async def tallies(self, *, since: datetime) -> dict[str, AppTally]:
        return await self._submit(queries.tallies, since)

    async def clients(
        self, *, app: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[ClientRecord]:
        return await self._submit(queries.clients, app, since, limit)

    async def forget(self, cmid: uuid.UUID) -> int:
        return await self._submit(queries.forget, cmid)

    async def forget_machine(self, machine_name: str) -> int:
        return await self._submit(queries.forget_machine, machine_name)

    async def reset(self, app: str | None = None) -> int:
        return await self._submit(queries.reset, app)

    async def stats(self) -> RequestStats:
        return await self._submit(queries.stats)

    async def count_unreadable(self) -> None:
        await self._submit(queries.count_unreadable)

    async def seed(self, template: Sighting, count: int) -> list[uuid.UUID]:
        return await self._submit(queries.seed, template, count)

    async def sizes(self) -> dict[str, int]:
        return await self._submit(queries.sizes)

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
