"""The client table's SQLite file: connecting, the schema and its migrations.

Split from :mod:`kms_host.storage.sqlite`, whose docstring is the theory of operation (WAL,
``BEGIN IMMEDIATE``, the busy timeout, ``PRAGMA user_version`` as the migration count).
Everything here runs on the store's worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from kms_host.errors import HRESULT_FILE_CORRUPT, StorageError
from kms_host.storage.sqlite_errors import MOVE_ASIDE
from kms_host.storage.sqlite_queries import transaction

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "SYNCHRONOUS",
    "connect",
    "migrate",
    "v1_initial",
]

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for other processes' transactions: the CLI's (at most a delete) or
sibling workers' batches (milliseconds each), after which it fails with a StorageError."""

SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
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


def v1_initial(conn: sqlite3.Connection) -> None:
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


def v2_synthetic(conn: sqlite3.Connection) -> None:
    """Mark the rows ``kms-host clients seed`` makes, so listings tell them from machines."""
    conn.execute("ALTER TABLE clients ADD COLUMN synthetic INTEGER NOT NULL DEFAULT 0")


def v3_no_cmid_index(conn: sqlite3.Connection) -> None:
    """Drop the index on ``cmid`` alone: it served only ``clients forget``, a rare command.

    Client IDs are random, so every new client wrote a random page of this index and every
    commit carried it. ``forget`` now scans the table instead (docs/performance.md); the
    primary key still finds an (app, CMID) pair.
    """
    conn.execute("DROP INDEX IF EXISTS clients_by_cmid")


def v4_same_hour_renewals(conn: sqlite3.Connection) -> None:
    """Let a renewal within its client's activation hour leave ``activations_by_hour`` alone.

    The v1 trigger moved the client between hour buckets on every new activation time, so a
    renewal in the same hour took one from its bucket and gave it back: two statements for
    nothing. That is the usual case when a CI job or ``kms-host bench --cmids repeated``
    activates the same machines again and again. Now the trigger fires only when the app,
    the hour or the required count changes; the buckets, and so every tally, are the same.
    Its body repeats v1's on purpose: a released migration's text never changes, so the two
    share no constant.
    """
    conn.execute("DROP TRIGGER clients_activation_moved")
    conn.execute(
        """CREATE TRIGGER clients_activation_moved
        AFTER UPDATE OF app, last_activated_us, activated_required_count ON clients
        WHEN old.app IS NOT new.app
            OR old.last_activated_us / 3600000000 IS NOT new.last_activated_us / 3600000000
            OR old.activated_required_count IS NOT new.activated_required_count BEGIN
            UPDATE activations_by_hour SET clients = clients - 1
            WHERE app = old.app AND hour = old.last_activated_us / 3600000000
                AND required_count = old.activated_required_count;
            INSERT INTO activations_by_hour
                SELECT new.app, new.last_activated_us / 3600000000, new.activated_required_count, 1
                WHERE new.last_activated_us IS NOT NULL
            ON CONFLICT DO UPDATE SET clients = clients + 1;
        END"""
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    v1_initial,
    v2_synthetic,
    v3_no_cmid_index,
    v4_same_hour_renewals,
)
"""Applied in order; ``PRAGMA user_version`` counts those applied. Only ever append."""


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; transaction() says where they are.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _refuse_foreign(conn)  # before WAL mode, which another program's file would be given
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
        # Statement and savepoint journals in memory: they only undo a statement or a
        # ROLLBACK TO inside an open transaction, and a crash needs none of them (the WAL
        # is the journal that counts), so durability is unchanged. On disk they cost a
        # batch of new clients write calls per record once past SQLite's spill threshold.
        # A batch holds at most RECORD_BATCH records, a few hundred KiB of pages.
        conn.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _refuse_foreign(conn: sqlite3.Connection) -> None:
    """A file with tables but no migration applied was made by something else: refuse it.

    Running v1 on it would fail on a table name it happens to share, or mix two schemas.
    Our own files never look so, even to a process that opens one while another creates it:
    v1 commits its tables and ``user_version`` 1 together.
    """
    if (
        _user_version(conn) == 0
        and conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    ):
        raise StorageError(
            f"a SQLite database but not a kms-host client table: {MOVE_ASIDE}",
            hresult=HRESULT_FILE_CORRUPT,
        )


def migrate(conn: sqlite3.Connection) -> None:
    current = _user_version(conn)
    if current > len(MIGRATIONS):
        raise StorageError(
            f"schema version {current} is newer than this kms-host knows"
            f" ({len(MIGRATIONS)}); use a newer kms-host"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with transaction(conn):
            # Re-read under the write lock: another process may have just migrated.
            if _user_version(conn) < version:
                MIGRATIONS[version - 1](conn)
                conn.execute(f"PRAGMA user_version = {version}")
