"""The client table's queries: each a job run on the store's worker thread, in order.

Split from :mod:`kms_host.storage.sqlite` (the asyncio shell: the worker thread, grouped
commits, errors); see its docstring for the theory of operation. Every write takes the write
lock up front (:func:`transaction`). Times are stored as integer microseconds (:func:`micros`).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from kms_host.policy.activation import AppTally
from kms_host.storage import ClientRecord, RequestStats, Sighting
from protocol.kms import LicenseStatus

__all__ = [
    "HOUR_US",
    "clients",
    "count_unreadable",
    "forget",
    "forget_machine",
    "micros",
    "moment",
    "record_batch",
    "reset",
    "seed",
    "sizes",
    "stats",
    "tallies",
    "tally",
    "transaction",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """``when`` as integer microseconds since the Unix epoch, as the table stores times."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: the client table needs aware UTC times")
    return (when - _EPOCH) // _MICROSECOND


def moment(stored: int) -> datetime:
    """A stored time back as an aware UTC datetime."""
    return _EPOCH + stored * _MICROSECOND


HOUR_US = 3_600_000_000
"""Granularity of ``activations_by_hour``: one hour in microseconds. The v1 triggers spell
it out (3600000000): a released migration never changes, whatever this constant becomes."""


@contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """Writes take the write lock up front (IMMEDIATE); DEFERRED gives reads one snapshot."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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


def tally(conn: sqlite3.Connection, app: str, since: datetime) -> AppTally:
    since_us = micros(since)
    hour = since_us // HOUR_US  # whole hours after this one come from activations_by_hour
    params = {"app": app, "hour": hour, "since_us": since_us, "next_hour_us": (hour + 1) * HOUR_US}
    live, cap = conn.execute(_TALLY, params).fetchone()
    return AppTally(live_clients=live, max_required_count=cap)


def write_sighting(conn: sqlite3.Connection, sighting: Sighting, since: datetime) -> AppTally:
    """Store one sighting inside the caller's transaction; its tally then includes it."""
    seen_us = micros(sighting.seen_at)
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
    return tally(conn, sighting.app, since)


def record_batch(
    conn: sqlite3.Connection, jobs: list[tuple[Sighting, datetime]]
) -> list[AppTally | Exception]:
    """Write ``jobs`` in order in one transaction; one outcome per job, valid once committed.

    A job's own failure is rolled back and becomes its outcome, so the others are
    unaffected, exactly as with a transaction each. If SQLite has rolled back the whole
    transaction on its own (an I/O error, a full disk), the earlier jobs are gone too: the
    error is raised and fails the batch. So does a failing COMMIT, after a ROLLBACK.

    Jobs almost never fail, so the batch is first written under one SAVEPOINT; only if a
    job fails is that pass undone and the batch written again with a SAVEPOINT per job,
    which isolates the failure: two statements per job fewer on the usual path.
    """
    with transaction(conn):
        conn.execute("SAVEPOINT batch")
        try:
            outcomes: list[AppTally | Exception] = [
                write_sighting(conn, sighting, since) for sighting, since in jobs
            ]
        except Exception:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO batch")
            outcomes = [_write_isolated(conn, sighting, since) for sighting, since in jobs]
        conn.execute("RELEASE batch")
    return outcomes


def _write_isolated(
    conn: sqlite3.Connection, sighting: Sighting, since: datetime
) -> AppTally | Exception:
    """One job under its own SAVEPOINT: its failure is rolled back and returned."""
    conn.execute("SAVEPOINT record")
    try:
        outcome: AppTally | Exception = write_sighting(conn, sighting, since)
    except Exception as exc:
        if not conn.in_transaction:
            raise
        conn.execute("ROLLBACK TO record")
        outcome = exc
    conn.execute("RELEASE record")
    return outcome


def tallies(conn: sqlite3.Connection, since: datetime) -> dict[str, AppTally]:
    with transaction(conn, "DEFERRED"):
        apps = [app for (app,) in conn.execute(_APPS_SINCE, (micros(since) // HOUR_US,))]
        tallies = {app: tally(conn, app, since) for app in apps}
    return {app: tally for app, tally in tallies.items() if tally.live_clients}


def clients(
    conn: sqlite3.Connection, app: str | None, since: datetime | None, limit: int | None
) -> list[ClientRecord]:
    params = {
        "app": app,
        "since_us": None if since is None else micros(since),
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
            first_seen=moment(row[11]),
            last_seen=moment(row[12]),
            last_activated=None if row[13] is None else moment(row[13]),
            request_count=row[14],
            synthetic=bool(row[15]),
        )
        for row in conn.execute(_CLIENTS, params)
    ]


def forget(conn: sqlite3.Connection, cmid: uuid.UUID) -> int:
    with transaction(conn):
        return conn.execute("DELETE FROM clients WHERE cmid = ?", (str(cmid),)).rowcount


def forget_machine(conn: sqlite3.Connection, machine_name: str) -> int:
    with transaction(conn):
        return conn.execute("DELETE FROM clients WHERE machine_name = ?", (machine_name,)).rowcount


def reset(conn: sqlite3.Connection, app: str | None) -> int:
    with transaction(conn):
        return conn.execute("DELETE FROM clients WHERE ? IS NULL OR app = ?", (app, app)).rowcount


_INSERT_SYNTHETIC = """
INSERT INTO clients (app, cmid, machine_name, sku_id, kms_id, license_status, is_vm,
    required_client_count, protocol_version, last_peer, last_hresult, first_seen_us,
    last_seen_us, last_activated_us, activated_required_count, request_count, synthetic)
VALUES (:app, :cmid, :machine_name, :sku_id, :kms_id, :license_status, :is_vm,
    :required_client_count, :protocol_version, :peer, 0, :seen_us,
    :seen_us, :seen_us, :required_client_count, 0, 1)
"""


def seed(conn: sqlite3.Connection, template: Sighting, count: int) -> list[uuid.UUID]:
    common = {
        "app": template.app,
        "sku_id": str(template.sku_id),
        "kms_id": str(template.kms_id),
        "license_status": template.license_status,
        "is_vm": template.is_vm,
        "required_client_count": template.required_client_count,
        "protocol_version": template.protocol_version,
        "peer": template.peer,
        "seen_us": micros(template.seen_at),
    }
    cmids = [uuid.uuid4() for _ in range(count)]
    with transaction(conn):
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


def sizes(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT app, count(*) FROM clients GROUP BY app").fetchall())


_UNREADABLE = -1
"""The ``request_stats`` row of requests that failed before their license status was read."""


def count_unreadable(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        conn.execute(_BUMP_STATS, {"license_status": _UNREADABLE, "failed": 1})


def stats(conn: sqlite3.Connection) -> RequestStats:
    rows = conn.execute("SELECT license_status, requests, failed FROM request_stats").fetchall()
    by_status = dict.fromkeys(map(int, LicenseStatus), 0)
    by_status.update((status, requests) for status, requests, _ in rows if status != _UNREADABLE)
    return RequestStats(
        total=sum(requests for _, requests, _ in rows),
        failed=sum(failed for _, _, failed in rows),
        by_license_status=by_status,
    )
