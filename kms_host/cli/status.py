"""``kms-host status``: the host's state, as ``slmgr /dlv`` shows a genuine host's.

kms-host-behaviour 2.5: the current count per application, computed exactly as the daemon
does (its ``[counting]`` settings, window and ``[clock] offset_s``), the listening addresses
(configured, and bound as the daemon's ``runtime.json`` says), scope, ePIDs, HwId, intervals
and the cumulative request counters. The version and the Rijndael build (``rijndael``:
``compiled`` or ``pure``) shown are this installation's; the daemon logs its own in its
``listening`` event.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

from kms_host.cli.views import (
    APPS,
    LICENSE_LABELS,
    add_common,
    command,
    host_now,
    read_runtime,
    require_table,
    settings_from,
)
from kms_host.config import Config
from kms_host.errors import EXIT_OK
from kms_host.host.app import check_catalog_settings
from kms_host.host.identity import IDENTITY_FILE, HostIdentity, load_identity
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog import Catalog
from kms_host.policy.catalog_file import load_catalog
from kms_host.storage import open_store
from protocol.kms import LicenseStatus, rijndael_build
from protocol.kms.epid import format_hwid

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status``."""
    status = commands.add_parser("status", help="the host's state, like slmgr /dlv")
    add_common(status)
    status.set_defaults(handler=command(_status))


async def _status(args: argparse.Namespace, config: Config) -> int:
    require_table(config)
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    now = host_now(config)
    since = now - timedelta(days=config.counting.window_days)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        tallies = {key: await store.tally(key, since=since) for key in APPS}
        tallies.update(await store.tallies(since=since))
        stats, sizes = await store.stats(), await store.sizes()
    finally:
        await store.close()
    identity = _identity(config, catalog, now)
    daemon = read_runtime(config.storage.data_dir)
    settings = daemon.get("settings") if daemon and daemon["running"] else None
    listen = settings["listen"] if settings else [str(a) for a in config.server.listen]
    held = [group.key for group in catalog.host_key_groups if group.key in scope]
    document = {
        "version": metadata.version("kms-host"),
        "rijndael": rijndael_build(),
        "data_dir": str(config.storage.data_dir),
        "daemon": daemon,
        "settings_from": settings_from(config, daemon),
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
    print(json.dumps(document, indent=2) if args.json else _status_text(document))
    return EXIT_OK


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


def _status_text(doc: dict[str, Any]) -> str:
    daemon = doc["daemon"]
    metrics = doc["metrics_listen"] or "off"
    if daemon is None:
        state, bound = "not running", "-"
    else:
        state = f"{'running' if daemon['running'] else 'not running (stale)'}, pid {daemon['pid']}"
        if daemon.get("workers"):  # serve --workers: the pid is the supervisor's
            state += f" ({len(daemon['workers'])} workers)"
        state += f", started {daemon['started_at']}"
        bound = ", ".join(daemon["tcp"])
        metrics = ", ".join(daemon["metrics"]) or metrics
    counting = doc["counting"]
    lines = [
        f"Key Management Service host (kms-host {doc['version']}, {doc['rijndael']} Rijndael)",
        f"Data directory:        {doc['data_dir']}",
        f"Daemon:                {state}",
        f"Listening on:          {bound} (configured: {', '.join(doc['listen'])})",
        f"Metrics:               {metrics}",
        f"Host-key scope:        {len(doc['scope'])} groups",
        f"KMS host HwId:         {doc['hwid'] or 'not generated yet (first start)'}",
        f"Activation interval:   {doc['activation_interval_min']} minutes",
        f"Renewal interval:      {doc['renewal_interval_min']} minutes",
        f"Settings from:         {doc['settings_from']}",
        f"Counting:              {counting['mode']}, prefill {counting['prefill']},"
        f" {counting['window_days']}-day window, clock offset {counting['clock_offset_s']:+g} s",
        "",
        "Current count:",
    ]
    lines += [
        f"    {app['name']:<50} {app['current_count']:>5}  ({app['live_clients']} live,"
        f" threshold {app['threshold']}, {app['table_rows']} in table)"
        for app in doc["applications"].values()
    ]
    lines += ["", "ePID per held host-key group:"]
    lines += [f"    {key:<26} {epid}" for key, epid in doc["epids"].items()] or ["    -"]
    requests = doc["requests"]
    lines += [
        "",
        "Key Management Service cumulative requests received from clients",
        f"    Total requests received: {requests['total']}",
        f"    Failed requests received: {requests['failed']}",
    ]
    for status, label in LICENSE_LABELS.items():
        count = requests["by_license_status"][status.name.lower()]
        lines.append(f"    Requests with License Status {label}: {count}")
    return "\n".join(lines)
