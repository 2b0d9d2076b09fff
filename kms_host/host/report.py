"""The host's state as documents: what ``kms-host status --json`` and ``clients --json`` print
and what the dashboard's API serves, built in one place so their field names cannot drift.

kms-host-behaviour 2.5: the current count per application is computed exactly as the daemon
answers it (its ``[counting]`` settings, window and ``[clock] offset_s``), beside the scope,
ePIDs, HwId, intervals and the cumulative request counters a genuine host's ``slmgr /dlv``
shows. Everything is read from the client table through the store (its worker thread) and
from the identity file, so the callers need no daemon: the CLI reads a data dir beside or
after one, the dashboard reads its own daemon's.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.host.identity import IDENTITY_FILE, HostIdentity, load_identity
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog import Catalog
from kms_host.storage import ClientRecord, ClientStore
from protocol.kms import LicenseStatus, rijndael_build
from protocol.kms.epid import format_hwid

__all__ = ["APPS", "LICENSE_LABELS", "client_row", "host_now", "iso", "status_document"]

APPS = ("windows", "office2010", "office")
"""The client-counting pools a genuine host keeps (spec 8.4), as catalog application keys."""

LICENSE_LABELS = {
    LicenseStatus.UNLICENSED: "Unlicensed",
    LicenseStatus.LICENSED: "Licensed",
    LicenseStatus.INITIAL_GRACE: "Initial grace",
    LicenseStatus.OUT_OF_TOLERANCE_GRACE: "Out-of-tolerance grace",
    LicenseStatus.NON_GENUINE_GRACE: "Non-genuine grace",
    LicenseStatus.NOTIFICATION: "Notification",
    LicenseStatus.EXTENDED_GRACE: "Extended grace",
}
"""``slmgr /dlv``'s names of the license states a client reports (kms-host-behaviour 2.5)."""


def host_now(config: Config) -> datetime:
    """The host clock's now (``[clock] offset_s`` applied)."""
    return Clock(timedelta(seconds=config.clock.offset_s)).now()


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with a ``Z``, as every document and log line writes UTC."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


async def status_document(
    config: Config,
    catalog: Catalog,
    store: ClientStore,
    *,
    scope: frozenset[str],
    daemon: dict[str, Any] | None,
    settings_from: str | None = None,
) -> dict[str, Any]:
    """``status --json``: ``daemon`` is the running daemon's ``runtime.json`` (or None).

    ``settings_from`` is the view's own account of where its settings came from (the CLI
    names explicit options that differ from the daemon's); without it, daemon or config.
    """
    now = host_now(config)
    since = now - timedelta(days=config.counting.window_days)
    tallies = {key: await store.tally(key, since=since) for key in APPS}
    tallies.update(await store.tallies(since=since))
    stats, sizes = await store.stats(), await store.sizes()
    identity = await asyncio.to_thread(_identity, config, catalog, now)
    settings = daemon.get("settings") if daemon and daemon["running"] else None
    listen = settings["listen"] if settings else [str(a) for a in config.server.listen]
    held = [group.key for group in catalog.host_key_groups if group.key in scope]
    return {
        "version": metadata.version("kms-host"),
        "rijndael": rijndael_build(),
        "data_dir": str(config.storage.data_dir),
        "daemon": daemon,
        "settings_from": settings_from
        or (f"daemon pid {daemon['pid']}" if settings and daemon else "config"),
        "listen": listen or ["[::]:1688"],
        "metrics_listen": str(config.metrics.listen) if config.metrics.listen else None,
        "scope": held,
        "hwid": format_hwid(identity.hwid) if identity else None,
        "epids": {key: identity.epids[key] for key in held} if identity else {},
        "activation_interval_min": config.host.activation_interval_min,
        "renewal_interval_min": config.host.renewal_interval_min,
        "counting": {
            "mode": config.counting.mode.value,
            "prefill": config.counting.prefill.value,
            "window_days": config.counting.window_days,
            "clock_offset_s": config.clock.offset_s,
        },
        "applications": {
            key: _application(catalog, key, tally, config, sizes.get(key, 0))
            for key, tally in tallies.items()
        },
        "requests": {
            "total": stats.total,
            "failed": stats.failed,
            "by_license_status": {
                status.name.lower(): stats.by_license_status.get(status, 0)
                for status in LicenseStatus
            },
        },
    }


def _application(
    catalog: Catalog, key: str, tally: AppTally, config: Config, rows: int
) -> dict[str, Any]:
    app = next((a for a in catalog.applications.values() if a.key == key), None)
    return {
        "name": app.name if app else f"unknown application {key}",
        # As a client of the application's threshold is told (the probe's request): with
        # prefill, a fresh genuine host already counts threshold - 1, not 0.
        "current_count": reported_count(
            tally, required=app.threshold if app else 0, counting=config.counting
        ),
        "live_clients": tally.live_clients,
        "threshold": app.threshold if app else None,
        "table_rows": rows,
    }


def _identity(config: Config, catalog: Catalog, now: datetime) -> HostIdentity | None:
    """The daemon's identity with configured overrides; None before its first start."""
    if not (config.storage.data_dir / IDENTITY_FILE).exists():
        return None
    return load_identity(
        config.storage.data_dir, catalog=catalog, host=config.host, today=now.date(), rng=os.urandom
    )


def client_row(record: ClientRecord, catalog: Catalog) -> dict[str, Any]:
    """One row of ``clients --json``."""
    sku = catalog.sku(record.sku_id)
    try:
        status = LICENSE_LABELS[LicenseStatus(record.license_status)]
    except ValueError:
        status = str(record.license_status)
    return {
        "app": record.app,
        "cmid": str(record.cmid),
        "machine_name": record.machine_name,
        "sku_id": str(record.sku_id),
        "sku_name": sku.name if sku else None,
        "kms_id": str(record.kms_id),
        "license_status": status,
        "is_vm": record.is_vm,
        "required_client_count": record.required_client_count,
        "protocol_version": record.protocol_version,
        "last_peer": record.last_peer,
        "last_hresult": f"0x{record.last_hresult:08X}",
        "first_seen": iso(record.first_seen),
        "last_seen": iso(record.last_seen),
        "last_activated": iso(record.last_activated),
        "request_count": record.request_count,
        "synthetic": record.synthetic,
    }
