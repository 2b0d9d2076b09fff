"""The client table: what the host remembers about every client, behind one interface.

A genuine host counts the distinct machines (CMIDs) that activated each application in the
last 30 days (kms-host-behaviour 2.1) and keeps cumulative request counters that ``slmgr
/dlv`` shows (2.5). :class:`ClientStore` is that memory. :mod:`kms_host.host.service` records one
:class:`Sighting` per processed request and reads the count it must answer from the
:class:`AppTally` that the same committed transaction returns, so an acknowledged activation
is never lost and the count never misses a concurrent request. The CLI reads the same store
beside a running daemon.

The interface is async and backend-neutral so that a PostgreSQL backend can follow the
SQLite one (:mod:`kms_host.storage.sqlite`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from kms_host.policy.activation import AppTally

__all__ = [
    "DATABASE_FILE",
    "ClientRecord",
    "ClientStore",
    "RequestStats",
    "Sighting",
    "open_store",
]

DATABASE_FILE = "kms-host.sqlite3"


@dataclass(frozen=True, slots=True)
class Sighting:
    """One processed request, refused or not."""

    app: str
    """"windows" | "office2010" | "office", or the application GUID string if unknown."""
    cmid: uuid.UUID
    machine_name: str
    sku_id: uuid.UUID
    kms_id: uuid.UUID
    license_status: int
    is_vm: bool
    required_client_count: int
    protocol_version: str
    """"4.0" | "5.0" | "6.0"."""
    peer: str
    """"ip:port" of the client."""
    hresult: int
    """What the host answered (0 = activated)."""
    seen_at: datetime
    """Aware UTC, from the daemon's (controllable) clock."""
    counted: bool
    """True for a successful activation that counts; False: recorded but not counted."""


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """One row of the client table: an (application, CMID) pair and its latest request."""

    app: str
    cmid: uuid.UUID
    machine_name: str
    sku_id: uuid.UUID
    kms_id: uuid.UUID
    license_status: int
    is_vm: bool
    required_client_count: int
    protocol_version: str
    last_peer: str
    last_hresult: int
    first_seen: datetime
    last_seen: datetime
    last_activated: datetime | None
    """The last counted activation; None if this client was only ever refused."""
    request_count: int
    synthetic: bool
    """Made by ``kms-host clients seed`` (threshold tests), not by a request."""


@dataclass(frozen=True, slots=True)
class RequestStats:
    """Cumulative request counters, like ``slmgr /dlv``: never reset with the client table."""

    total: int
    """Every request answered, including those that could not be read."""
    failed: int
    """Requests answered with a non-zero HRESULT, including those that could not be read."""
    by_license_status: Mapping[int, int]
    """Requests per license status the client reported; every ``LicenseStatus`` is present."""


class ClientStore(Protocol):
    """The client table. Every method is safe beside another process using the same store."""

    async def record(self, sighting: Sighting, *, since: datetime) -> AppTally:
        """Store ``sighting`` and bump the counters in one committed transaction.

        Returns the tally of ``sighting.app`` (with ``since`` as window start), computed in
        the same transaction and therefore including this sighting.
        """
        ...

    async def tally(self, app: str, *, since: datetime) -> AppTally:
        """The tally of one application (zeros if it has no live clients)."""
        ...

    async def tallies(self, *, since: datetime) -> dict[str, AppTally]:
        """The tally of every application with at least one live client."""
        ...

    async def clients(
        self, *, app: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[ClientRecord]:
        """Rows, newest ``last_seen`` first, optionally of one app and seen at/after ``since``."""
        ...

    async def forget(self, cmid: uuid.UUID) -> int:
        """Remove a CMID from every application; returns the number of rows removed."""
        ...

    async def forget_machine(self, machine_name: str) -> int:
        """Remove every row whose client last gave ``machine_name``; returns how many.

        ``kms-host bench --cleanup``: the load generator's clients all give one name, and
        their CMIDs are random, so the name is what finds them again.
        """
        ...

    async def reset(self, app: str | None = None) -> int:
        """Remove every row (of one app); the cumulative counters are kept."""
        ...

    async def stats(self) -> RequestStats:
        """The cumulative request counters."""
        ...

    async def count_unreadable(self) -> None:
        """Count a request answered with an error before it could be read (no CMID to record).

        A genuine host's "failed requests received" counts these too (kms-host-behaviour 2.5);
        they appear in ``total`` and ``failed`` but under no license status.
        """
        ...

    async def sizes(self) -> dict[str, int]:
        """Rows per application, live or not: the table's size, for metrics and ``status``."""
        ...

    async def seed(self, template: Sighting, count: int) -> list[uuid.UUID]:
        """Add ``count`` synthetic clients of ``template.app``; returns their CMIDs.

        Threshold tests need a host that already has N clients without sending N
        requests. Each row copies ``template`` except for a random CMID and the machine name
        ``seed-NNNN`` (numbered on from the app's synthetic rows); it counts like an
        activation at ``template.seen_at`` and is marked ``synthetic``, so listings tell it
        apart and ``forget``/``reset`` remove it. The request counters stay: nothing was asked.
        """
        ...

    def changed_elsewhere(self) -> bool:
        """Whether another process changed the table since the previous call.

        ``kms-host clients forget/reset/seed`` write beside the running daemon, and the
        workers of ``serve --workers`` beside each other; the daemon asks this (at no I/O cost)
        to know when the counts it caches must be reloaded. A store opened with
        ``changes_interval_s`` answers True at most once per that many seconds.
        """
        ...

    async def close(self) -> None:
        """Release the store; later calls raise StorageError. Closing twice is harmless."""
        ...


async def open_store(
    data_dir: Path,
    *,
    synchronous: str = "full",
    changes_interval_s: float = 0.0,
    commit_delay_s: float = 0.0,
) -> ClientStore:
    """Open (creating if needed) the client table in ``data_dir``.

    ``synchronous`` is ``[storage] synchronous``: "full" or "normal". ``changes_interval_s``
    spaces out :meth:`ClientStore.changed_elsewhere`'s reports (0, the default: each one).
    ``commit_delay_s`` is ``[storage] commit_delay_ms`` in seconds: how long a grouped
    commit may wait for more records while the host is busy (0, the default: no wait; the
    CLI's stores record nothing).
    """
    # Imported here because the backend imports this module's types; this factory is also
    # where a choice of backend will go.
    from kms_host.storage.sqlite import SqliteClientStore  # noqa: PLC0415

    return await SqliteClientStore.open(
        data_dir / DATABASE_FILE,
        synchronous=synchronous,
        changes_interval_s=changes_interval_s,
        commit_delay_s=commit_delay_s,
    )
