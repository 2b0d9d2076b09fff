"""``kms-host status``: the host's state, as ``slmgr /dlv`` shows a genuine host's.

kms-host-behaviour 2.5: the current count per application, computed exactly as the daemon
does (its ``[counting]`` settings, window and ``[clock] offset_s``), the listening addresses
(configured, and bound as the daemon's ``runtime.json`` says), scope, ePIDs, HwId, intervals
and the cumulative request counters; the document is :mod:`kms_host.host.report`'s, which
the dashboard's ``/api/status`` serves too. The version and the Rijndael build (``rijndael``:
``compiled`` or ``pure``) shown are this installation's; the daemon logs its own in its
``listening`` event.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kms_host.cli.views import (
    LICENSE_LABELS,
    add_common,
    command,
    read_runtime,
    require_table,
    settings_from,
)
from kms_host.config import Config
from kms_host.errors import EXIT_OK
from kms_host.host.app import check_catalog_settings
from kms_host.host.report import status_document
from kms_host.policy.catalog_file import load_catalog
from kms_host.safe_text import printable
from kms_host.storage import open_store

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
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        daemon = read_runtime(config.storage.data_dir)
        document = await status_document(
            config,
            catalog,
            store,
            scope=scope,
            daemon=daemon,
            settings_from=settings_from(config, daemon),
        )
    finally:
        await store.close()
    print(json.dumps(document, indent=2) if args.json else _status_text(document))
    return EXIT_OK


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
    return "\n".join(printable(line) for line in lines)
