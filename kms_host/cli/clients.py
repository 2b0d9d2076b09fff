"""``kms-host clients`` (and ``forget``, ``reset``, ``seed``): the client table, read and edited.

``seed`` adds synthetic clients that count like real ones, so that a lab reaches a product's
activation threshold (spec 7.2) without that many machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime, timedelta

from kms_host.cli.views import (
    APPS,
    Failure,
    add_common,
    command,
    format_table,
    host_now,
    report,
    require_table,
)
from kms_host.config import Config
from kms_host.errors import EXIT_FAILURE, EXIT_OK
from kms_host.host.report import client_row
from kms_host.policy.catalog import Catalog, Sku
from kms_host.policy.catalog_file import load_catalog
from kms_host.storage import Sighting, open_store
from protocol.kms import LicenseStatus

__all__ = ["register"]

SEED_GVLKS = {
    "windows": "W269N-WFGWX-YVC9B-4J6C9-T83GX",  # Windows 10/11 Pro
    "office2010": "VYBBJ-TRJPB-QFQRF-QFT4D-H3GVB",  # Office Professional Plus 2010
    "office": "FXYTK-NJJ8C-GB6DW-3DYQT-6F7TH",  # Office LTSC Professional Plus 2021
}
"""The product each application's synthetic clients claim: the commonest volume edition."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``clients`` with its actions ``forget``, ``reset`` and ``seed``."""
    clients = commands.add_parser("clients", help="list the client table, newest first")
    add_common(clients)
    clients.add_argument("--app", choices=APPS, help="only this application's clients")
    clients.add_argument("--since", type=float, metavar="DAYS", help="seen in the last DAYS")
    clients.set_defaults(handler=command(_list_clients))
    actions = clients.add_subparsers(dest="action", metavar="ACTION")
    forget = actions.add_parser("forget", help="remove one CMID from every application")
    forget.add_argument("cmid", type=uuid.UUID, metavar="CMID")
    reset = actions.add_parser("reset", help="remove every client (of one application)")
    reset.add_argument("--app", choices=APPS, default=argparse.SUPPRESS)
    seed = actions.add_parser("seed", help="add N synthetic clients (threshold tests)")
    seed.add_argument("--app", choices=APPS, required=True)
    seed.add_argument("--count", type=_count, required=True, metavar="N")
    for action, run in ((forget, _forget), (reset, _reset), (seed, _seed)):
        add_common(action, suppress=True)
        action.set_defaults(handler=command(run))


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be from 1 to 1000000")
    return value


async def _list_clients(args: argparse.Namespace, config: Config) -> int:
    require_table(config)
    catalog = load_catalog()
    since = None if args.since is None else host_now(config) - timedelta(days=args.since)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        records = await store.clients(app=args.app, since=since)
    finally:
        await store.close()
    rows = [client_row(record, catalog) for record in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK if rows else EXIT_FAILURE
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
    print(format_table(headers.split("|"), table, decorated=sys.stdout.isatty()))
    return EXIT_OK if rows else EXIT_FAILURE  # the README's "nothing matched"


async def _forget(args: argparse.Namespace, config: Config) -> int:
    require_table(config)
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        removed = await store.forget(args.cmid)
    finally:
        await store.close()
    if not removed:
        raise Failure(f"no client with CMID {args.cmid}")
    report(args, {"forgotten": str(args.cmid), "rows": removed}, f"forgot {args.cmid}")
    return EXIT_OK


async def _reset(args: argparse.Namespace, config: Config) -> int:
    require_table(config)
    app: str | None = args.app
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        removed = await store.reset(app)
    finally:
        await store.close()
    what = f"{app} clients" if app else "clients"
    report(args, {"app": app, "rows": removed}, f"removed {removed} {what}")
    return EXIT_OK


async def _seed(args: argparse.Namespace, config: Config) -> int:
    catalog = load_catalog()
    sku = catalog.sku_by_gvlk(SEED_GVLKS[args.app])
    app = next(a for a in catalog.applications.values() if a.key == args.app)
    if sku is None:
        raise Failure(f"the catalog lacks {SEED_GVLKS[args.app]}, the seed product of {app.key}")
    template = _seed_template(catalog, sku, app.threshold, host_now(config))
    store = await open_store(config.storage.data_dir, synchronous=config.storage.synchronous)
    try:
        cmids = await store.seed(template, args.count)
    finally:
        await store.close()
    report(
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
