"""``kms-host status``, ``clients`` and ``products``: what an operator asks a host (issue 4).

They read the data dir, never the daemon, so they work beside a running host, inside its
container and after it stopped: SQLite in WAL mode lets them read while the daemon writes,
and the few writes (``clients forget/reset/seed``) take the write lock up front
(``BEGIN IMMEDIATE``) and wait for the daemon's commit. The daemon notices such a write
and reloads the counts it caches (:meth:`~kms_host.storage.ClientStore.changed_elsewhere`).

``status`` is ``slmgr /dlv`` on a genuine host (kms-host-behaviour 2.5): the current count
per application, computed exactly as the daemon does (its ``[counting]`` settings, window
and ``[clock] offset_s``), the listening addresses (configured, and bound as the daemon's
``runtime.json`` says), scope, ePIDs, HwId, intervals and the cumulative request counters.

The version and the Rijndael build (``rijndael``: ``compiled`` or ``pure``) that ``status``
shows are this installation's; the daemon logs its own in its ``listening`` event.

Configuration is resolved like ``serve``'s (``--config``, ``$KMS_HOST_CONFIG``,
``KMS_HOST_*``), so in a container ``status`` finds ``/data`` without flags. Exit codes as
for ``serve``: 0 success, 1 a runtime failure (no client table, storage error, nothing
matched), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from kms_host.clock import Clock
from kms_host.config import Config, ConfigOverrides, load_config
from kms_host.errors import ConfigError, KmsHostError
from kms_host.host.app import RUNTIME_FILE, check_catalog_settings
from kms_host.host.identity import IDENTITY_FILE, HostIdentity, load_identity
from kms_host.policy.activation import AppTally, reported_count
from kms_host.policy.catalog import Catalog, Sku
from kms_host.policy.catalog_file import load_catalog
from kms_host.storage import DATABASE_FILE, ClientRecord, Sighting, open_store
from protocol.kms import LicenseStatus, rijndael_build
from protocol.kms.epid import format_hwid

__all__ = ["register"]

APPS = ("windows", "office2010", "office")
"""The client-counting pools a genuine host keeps (spec 8.4), as catalog application keys."""

SEED_GVLKS = {
    "windows": "W269N-WFGWX-YVC9B-4J6C9-T83GX",  # Windows 10/11 Pro
    "office2010": "VYBBJ-TRJPB-QFQRF-QFT4D-H3GVB",  # Office Professional Plus 2010
    "office": "FXYTK-NJJ8C-GB6DW-3DYQT-6F7TH",  # Office LTSC Professional Plus 2021
}
"""The product each application's synthetic clients claim: the commonest volume edition."""

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

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Failure(KmsHostError):
    """A command cannot do what was asked; the message is the one line the operator sees."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status``, ``clients`` (with ``forget``, ``reset``, ``seed``) and ``products``."""
    status = commands.add_parser("status", help="the host's state, like slmgr /dlv")
    _add_common(status)
    status.set_defaults(handler=_command(_status))

    clients = commands.add_parser("clients", help="list the client table, newest first")
    _add_common(clients)
    clients.add_argument("--app", choices=APPS, help="only this application's clients")
    clients.add_argument("--since", type=float, metavar="DAYS", help="seen in the last DAYS")
    clients.set_defaults(handler=_command(_list_clients))
    actions = clients.add_subparsers(dest="action", metavar="ACTION")
    forget = actions.add_parser("forget", help="remove one CMID from every application")
    forget.add_argument("cmid", type=uuid.UUID, metavar="CMID")
    reset = actions.add_parser("reset", help="remove every client (of one application)")
    reset.add_argument("--app", choices=APPS, default=argparse.SUPPRESS)
    seed = actions.add_parser("seed", help="add N synthetic clients (threshold tests)")
    seed.add_argument("--app", choices=APPS, required=True)
    seed.add_argument("--count", type=_count, required=True, metavar="N")
    for action, run in ((forget, _forget), (reset, _reset), (seed, _seed)):
        _add_common(action, suppress=True)
        action.set_defaults(handler=_command(run))

    products = commands.add_parser("products", help="search the product catalog")
    products.add_argument("query", nargs="?", help="product name, GVLK or GUID (default: all)")
    _add_common(products)
    products.set_defaults(handler=_command(_products))


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    # A sub-action's copies are SUPPRESSed so that ``clients --data-dir D reset`` keeps D.
    unset = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, default=unset, help="TOML config file")
    parser.add_argument("--data-dir", type=Path, default=unset, help="the daemon's data dir")
    parser.add_argument(
        "--json", action="store_true", default=unset if suppress else False, help="JSON output"
    )


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be from 1 to 1000000")
    return value


_Run = Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]


def _command(run: _Run) -> Callable[[argparse.Namespace], int]:
    """Resolve the config like ``serve``, run, and map failures to exit codes."""

    def handler(args: argparse.Namespace) -> int:
        try:
            config = load_config(
                args.config, env=os.environ, overrides=ConfigOverrides(data_dir=args.data_dir)
            )
            return asyncio.run(run(args, config))
        except ConfigError as exc:
            print(f"kms-host: config error at {exc.key}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            # ``kms-host clients | head`` stopped reading: the Python docs' quiet exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILURE
        except (KmsHostError, OSError) as exc:
            print(f"kms-host {args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return handler


def _require_table(config: Config) -> None:
    if not (config.storage.data_dir / DATABASE_FILE).exists():
        raise _Failure(
            f"no client table in {config.storage.data_dir} (has the daemon run there? --data-dir)"
        )


def _now(config: Config) -> datetime:
    return Clock(timedelta(seconds=config.clock.offset_s)).now()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# --- status ----------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, config: Config) -> int:
    _require_table(config)
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    now = _now(config)
    since = now - timedelta(days=config.counting.window_days)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        tallies = {key: await store.tally(key, since=since) for key in APPS}
        tallies.update(await store.tallies(since=since))
        stats, sizes = await store.stats(), await store.sizes()
    finally:
        await store.close()
    identity = _identity(config, catalog, now)
    held = [group.key for group in catalog.host_key_groups if group.key in scope]
    document = {
        "version": metadata.version("kms-host"),
        "rijndael": rijndael_build(),
        "data_dir": str(config.storage.data_dir),
        "daemon": _runtime(config.storage.data_dir),
        "listen": [str(a) for a in config.server.listen] or ["[::]:1688"],
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
        "current_count": reported_count(tally, required=0, counting=config.counting),
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


def _runtime(data_dir: Path) -> dict[str, Any] | None:
    """What the daemon wrote at start (``app.RUNTIME_FILE``), and whether its pid still runs."""
    try:
        document: dict[str, Any] = json.loads((data_dir / RUNTIME_FILE).read_text("utf-8"))
        pid = int(document["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        running = False  # killed without a clean stop: the file is stale
    except PermissionError:
        running = True  # alive, under another user
    else:
        running = True
    return {**document, "running": running}


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


# --- clients ---------------------------------------------------------------------------------


async def _list_clients(args: argparse.Namespace, config: Config) -> int:
    _require_table(config)
    catalog = load_catalog()
    since = None if args.since is None else _now(config) - timedelta(days=args.since)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        records = await store.clients(app=args.app, since=since)
    finally:
        await store.close()
    rows = [_client(record, catalog) for record in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    headers = "LAST SEEN (UTC)|APP|MACHINE|CMID|PRODUCT|LICENSE|VER|RESULT|REQS|PEER|NOTE"
    table = [
        (
            row["last_seen"][:19].replace("T", " "),
            row["app"],
            row["machine_name"],
            row["cmid"],
            row["sku_name"] or row["sku_id"],
            row["license_status"],
            row["protocol_version"],
            row["last_hresult"],
            str(row["request_count"]),
            row["last_peer"],
            ",".join(n for n, on in (("vm", row["is_vm"]), ("seed", row["synthetic"])) if on),
        )
        for row in rows
    ]
    print(_table(headers.split("|"), table, decorated=sys.stdout.isatty()))
    return EXIT_OK


def _client(record: ClientRecord, catalog: Catalog) -> dict[str, Any]:
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
        "first_seen": _iso(record.first_seen),
        "last_seen": _iso(record.last_seen),
        "last_activated": _iso(record.last_activated),
        "request_count": record.request_count,
        "synthetic": record.synthetic,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, decorated: bool) -> str:
    """Columns aligned with two spaces; on a terminal, a rule under the header and a total."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(headers).rstrip()]
    if decorated:
        out.append("  ".join("-" * width for width in widths))
    out += [line(row).rstrip() for row in rows]
    if decorated:
        out.append(f"({len(rows)} {'row' if len(rows) == 1 else 'rows'})")
    return "\n".join(out)


async def _forget(args: argparse.Namespace, config: Config) -> int:
    _require_table(config)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        removed = await store.forget(args.cmid)
    finally:
        await store.close()
    if not removed:
        raise _Failure(f"no client with CMID {args.cmid}")
    _report(args, {"forgotten": str(args.cmid), "rows": removed}, f"forgot {args.cmid}")
    return EXIT_OK


async def _reset(args: argparse.Namespace, config: Config) -> int:
    _require_table(config)
    app: str | None = args.app
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        removed = await store.reset(app)
    finally:
        await store.close()
    what = f"{app} clients" if app else "clients"
    _report(args, {"app": app, "rows": removed}, f"removed {removed} {what}")
    return EXIT_OK


async def _seed(args: argparse.Namespace, config: Config) -> int:
    catalog = load_catalog()
    sku = catalog.sku_by_gvlk(SEED_GVLKS[args.app])
    app = next(a for a in catalog.applications.values() if a.key == args.app)
    if sku is None:
        raise _Failure(f"the catalog lacks {SEED_GVLKS[args.app]}, the seed product of {app.key}")
    template = _seed_template(catalog, sku, app.threshold, _now(config))
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        cmids = await store.seed(template, args.count)
    finally:
        await store.close()
    _report(
        args,
        {"app": args.app, "cmids": [str(c) for c in cmids]},
        f"seeded {len(cmids)} synthetic {args.app} clients ({sku.name})",
    )
    return EXIT_OK


def _seed_template(catalog: Catalog, sku: Sku, threshold: int, now: datetime) -> Sighting:
    """A client that renewed just now; ``seed`` gives each copy its own CMID and name."""
    product = catalog.kms_products[sku.kms_id]
    return Sighting(
        app=product.application,
        cmid=uuid.UUID(int=0),
        machine_name="",
        sku_id=sku.id,
        kms_id=sku.kms_id,
        license_status=LicenseStatus.LICENSED,
        is_vm=False,
        required_client_count=threshold,
        protocol_version=f"{product.default_protocol.value}.0",
        peer="seed",
        hresult=0,
        seen_at=now,
        counted=True,
    )


def _report(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document, indent=2) if args.json else text)


# --- products --------------------------------------------------------------------------------


async def _products(args: argparse.Namespace, config: Config) -> int:
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    if args.query:
        skus = catalog.search(args.query)
    else:
        skus = sorted(catalog.skus.values(), key=lambda s: (s.name.casefold(), str(s.id)))
    if not skus:
        raise _Failure(f"no product matches {args.query!r}")
    rows = [_product(catalog, sku, scope) for sku in skus]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    headers = ("PRODUCT", "GVLK", "KMS PRODUCT", "APP", "THRESHOLD", "PROTO", "SERVED BY")
    table = [
        (
            row["name"],
            row["gvlk"] or "-",
            row["kms_product"],
            row["application"],
            str(row["threshold"]),
            row["default_protocol"],
            row["served_by"] or "not served",
        )
        for row in rows
    ]
    print(_table(headers, table, decorated=sys.stdout.isatty()))
    return EXIT_OK


def _product(catalog: Catalog, sku: Sku, scope: frozenset[str]) -> dict[str, Any]:
    product = catalog.kms_products[sku.kms_id]
    app_id = catalog.application_id(product.application)
    group = catalog.group_for(sku.kms_id, app_id, scope)
    return {
        "name": sku.name,
        "sku_id": str(sku.id),
        "gvlk": sku.gvlk,
        "kms_product": product.name,
        "kms_id": str(sku.kms_id),
        "application": product.application,
        "threshold": product.threshold,
        "default_protocol": f"{product.default_protocol.value}.0",
        "served": group is not None,
        "served_by": group.key if group else None,
    }
